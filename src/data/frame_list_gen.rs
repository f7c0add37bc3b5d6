//! Small synthetic versions of Charades and Something-Something V2 in PySlowFast's on-disk
//! formats, rendered from the synthetic action dataset, so the frame-list loaders can be tested
//! end to end.
//!
//! Both write JPEG frames under `frames/` and PySlowFast's frame lists (read by
//! `slowfast/datasets/utils.py::load_image_lists`): the header
//! `original_vido_id video_id frame_id path labels`, then one line per frame with the video's
//! name, its number in the list (0-based), the frame's number (0-based), the frame's path
//! relative to the output directory and its labels (`"3,7"`, or `""` for none). Charades labels
//! frames (multi-label); SSv2 labels videos through its JSON files. Every file is written to a
//! temporary name and renamed, the lists and JSON files last, so a list never names a frame
//! that is not there.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::collate::Rng;
use crate::data::synthetic::{self, CLASSES};
use crate::error::{Error, Result};

/// What to generate.
#[derive(Debug, Clone)]
pub struct FrameListOptions {
    /// Videos over both splits.
    pub videos: u64,
    /// Mean video length in frames; lengths vary around it.
    pub frames: u32,
    /// Frame side in pixels.
    pub size: u32,
    pub seed: u64,
    /// Share of the videos in `val.csv`.
    pub val_fraction: f64,
}

impl Default for FrameListOptions {
    fn default() -> Self {
        FrameListOptions {
            videos: 24,
            frames: 16,
            size: 64,
            seed: 0,
            val_fraction: 0.2,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub train_videos: u64,
    pub val_videos: u64,
    /// JPEG frames over both splits.
    pub frames: u64,
    pub classes: usize,
}

/// SSv2 templates, one per synthetic class in label order.
pub const SSV2_TEMPLATES: [&str; 12] = [
    "Moving [something] right",
    "Moving [something] up and right",
    "Moving [something] up",
    "Moving [something] up and left",
    "Moving [something] left",
    "Moving [something] down and left",
    "Moving [something] down",
    "Moving [something] down and right",
    "Turning [something] clockwise",
    "Turning [something] counterclockwise",
    "Moving [something] closer",
    "Moving [something] away",
];

const HEADER: &str = "original_vido_id video_id frame_id path labels\n";
const JPEG_QUALITY: u8 = 90;
// Streams of the generator, so the layout draws of one dataset never repeat another's.
const CHARADES_STREAM: u64 = 0xC4A0_AD35;
const SSV2_STREAM: u64 = 0x0055_7602;
const SPLIT_STREAM: u64 = 0x0005_B117;

/// One video as written: its name, its frames' paths (relative to the output directory) and
/// each frame's label set.
struct Written {
    name: String,
    paths: Vec<String>,
    labels: Vec<Vec<u32>>,
}

/// Charades: every video 2 or 3 consecutive actions (different classes), some with a few
/// unlabelled lead-in frames, some with the first action's last frames also carrying the
/// second's class. Writes `frames/<video>/<video>-<frame:06>.jpg` (1-based, as
/// Charades_v1_rgb), `train.csv`, `val.csv` (PySlowFast reads it for val and test) and
/// `classes.txt` (one class name per line, in label order).
pub fn write_charades(out: &Path, o: &FrameListOptions) -> Result<Summary> {
    check(o)?;
    let names = charades_names(o.seed, o.videos);
    let videos: Vec<Written> = (0..o.videos)
        .into_par_iter()
        .map(|i| charades_video(out, o, i, &names[i as usize]))
        .collect::<Result<_>>()?;
    let val = val_set(o);
    let summary = write_lists(out, &videos, &val)?;
    let classes: String = CLASSES.iter().map(|c| format!("{c}\n")).collect();
    write_atomic(&out.join("classes.txt"), classes.as_bytes(), true)?;
    Ok(summary)
}

/// Something-Something V2: one class per video, a template in which direction matters
/// ([`SSV2_TEMPLATES`]). Writes `frames/<id>/<id>_<frame:06>.jpg` (1-based), `train.csv` and
/// `val.csv` (every frame's labels `""`), `something-something-v2-labels.json` (template
/// without brackets -> class id as a decimal string) and `something-something-v2-train.json` /
/// `-validation.json` (the videos of each split: id, label, template, placeholders). Video ids
/// are "1", "2", ...
pub fn write_ssv2(out: &Path, o: &FrameListOptions) -> Result<Summary> {
    check(o)?;
    let rendered: Vec<(Written, Ssv2Entry)> = (0..o.videos)
        .into_par_iter()
        .map(|i| ssv2_video(out, o, i))
        .collect::<Result<_>>()?;
    let val = val_set(o);
    let mut splits: [Vec<&Ssv2Entry>; 2] = [Vec::new(), Vec::new()];
    for (i, (_, entry)) in rendered.iter().enumerate() {
        splits[usize::from(val.contains(&(i as u64)))].push(entry);
    }
    for (entries, name) in splits.iter().zip(["train", "validation"]) {
        let path = out.join(format!("something-something-v2-{name}.json"));
        write_atomic(&path, &to_json(&path, entries)?, true)?;
    }
    let labels: serde_json::Map<String, serde_json::Value> = SSV2_TEMPLATES
        .iter()
        .enumerate()
        .map(|(c, t)| (t.replace(['[', ']'], ""), c.to_string().into()))
        .collect();
    let path = out.join("something-something-v2-labels.json");
    write_atomic(&path, &to_json(&path, &labels)?, true)?;
    let videos: Vec<Written> = rendered.into_iter().map(|(w, _)| w).collect();
    write_lists(out, &videos, &val)
}

fn check(o: &FrameListOptions) -> Result<()> {
    let bad = |m: &str| Err(Error::InvalidArgument(m.into()));
    if o.videos == 0 {
        return bad("videos must be > 0");
    }
    if o.frames < 2 {
        return bad(&format!("frames must be >= 2, got {}", o.frames));
    }
    if !(16..=4096).contains(&o.size) {
        return bad(&format!("size must be in [16, 4096], got {}", o.size));
    }
    if !(0.0..1.0).contains(&o.val_fraction) {
        return bad(&format!(
            "val_fraction must be in [0, 1), got {}",
            o.val_fraction
        ));
    }
    Ok(())
}

/// The videos that go to val: round(videos x val_fraction) of them (at least one when the
/// fraction is positive and there are two videos or more, never all), chosen by a seeded
/// shuffle so every class can reach both splits.
fn val_set(o: &FrameListOptions) -> HashSet<u64> {
    let n = o.videos;
    let mut count = (n as f64 * o.val_fraction).round() as u64;
    if o.val_fraction > 0.0 && n >= 2 {
        count = count.max(1);
    }
    let count = count.min(n.saturating_sub(1));
    let mut order: Vec<u64> = (0..n).collect();
    let mut rng = Rng::new(o.seed, SPLIT_STREAM, 0);
    for k in (1..order.len()).rev() {
        let j = rng.int_inclusive(0, k as u32) as usize;
        order.swap(k, j);
    }
    order.into_iter().take(count as usize).collect()
}

/// Writes `train.csv` and `val.csv`: videos in index order, numbered from 0 in each list.
fn write_lists(out: &Path, videos: &[Written], val: &HashSet<u64>) -> Result<Summary> {
    let mut lists = [String::from(HEADER), String::from(HEADER)];
    let mut counts = [0u64; 2];
    let mut frames = 0u64;
    for (i, v) in videos.iter().enumerate() {
        let s = usize::from(val.contains(&(i as u64)));
        for (f, (path, labels)) in v.paths.iter().zip(&v.labels).enumerate() {
            let labels: Vec<String> = labels.iter().map(u32::to_string).collect();
            // Writing to a String cannot fail.
            let _ = writeln!(
                lists[s],
                "{} {} {f} {path} \"{}\"",
                v.name,
                counts[s],
                labels.join(",")
            );
        }
        counts[s] += 1;
        frames += v.paths.len() as u64;
    }
    for (list, name) in lists.iter().zip(["train.csv", "val.csv"]) {
        write_atomic(&out.join(name), list.as_bytes(), true)?;
    }
    Ok(Summary {
        train_videos: counts[0],
        val_videos: counts[1],
        frames,
        classes: CLASSES.len(),
    })
}

/// Charades-like names: 5 characters of [0-9A-Z], unique, from the seed.
fn charades_names(seed: u64, n: u64) -> Vec<String> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = Rng::new(seed, CHARADES_STREAM, u64::MAX);
    let mut seen = HashSet::new();
    let mut names = Vec::with_capacity(n as usize);
    while (names.len() as u64) < n {
        let name: String = (0..5)
            .map(|_| char::from(ALPHABET[rng.int_inclusive(0, 35) as usize]))
            .collect();
        if seen.insert(name.clone()) {
            names.push(name);
        }
    }
    names
}

/// Lays out, renders and writes Charades video `i`.
fn charades_video(out: &Path, o: &FrameListOptions, i: u64, name: &str) -> Result<Written> {
    let mut rng = Rng::new(o.seed, CHARADES_STREAM, i);
    let segments = 2 + rng.int_inclusive(0, 1) as usize;
    // Different classes within the video; the first cycles so every class gets its share.
    let mut classes = vec![synthetic::label_of(i)];
    while classes.len() < segments {
        let c = rng.int_inclusive(0, CLASSES.len() as u32 - 1);
        if !classes.contains(&c) {
            classes.push(c);
        }
    }
    // Half the videos open with a few unlabelled frames.
    let lead = if i % 2 == 0 {
        rng.int_inclusive(1, 3)
    } else {
        0
    };
    let length = (f64::from(o.frames) * (0.75 + 0.75 * rng.uniform())).round() as u32;
    let length = length.max(lead + 3 * segments as u32);
    // Segment lengths in proportion to random weights, each at least 3 frames.
    let weights: Vec<f64> = (0..segments).map(|_| 0.6 + 0.8 * rng.uniform()).collect();
    let total: f64 = weights.iter().sum();
    let spare = length - lead - 3 * segments as u32;
    let mut lens: Vec<u32> = weights
        .iter()
        .map(|w| 3 + (f64::from(spare) * w / total).floor() as u32)
        .collect();
    let used: u32 = lens.iter().sum();
    lens[segments - 1] += length - lead - used;
    // A third of the videos announce the second action early: the first action's last 1-2
    // frames carry both classes.
    let overlap = if i % 3 == 1 {
        rng.int_inclusive(1, 2)
    } else {
        0
    };

    let mut labels: Vec<Vec<u32>> = vec![Vec::new(); lead as usize];
    let mut pixels = Vec::new();
    for (k, (&len, &class)) in lens.iter().zip(&classes).enumerate() {
        // The lead-in is the start of the first action's clip, not yet annotated.
        let rendered = if k == 0 { len + lead } else { len };
        pixels.extend(synthetic::render_clip_of(
            o.seed ^ CHARADES_STREAM,
            i * 4 + k as u64,
            class,
            rendered,
            o.size,
        ));
        for f in 0..len {
            let mut set = vec![class];
            if k == 0 && f + overlap >= len {
                set.push(classes[1]);
            }
            labels.push(set);
        }
    }
    let paths = write_frames(out, name, '-', &pixels, length, o.size)?;
    Ok(Written {
        name: name.to_string(),
        paths,
        labels,
    })
}

/// One video of SSv2's JSON files.
#[derive(Debug, Clone, Serialize)]
struct Ssv2Entry {
    id: String,
    label: String,
    template: String,
    placeholders: Vec<String>,
}

/// Renders and writes SSv2 video `i` (id `i + 1`).
fn ssv2_video(out: &Path, o: &FrameListOptions, i: u64) -> Result<(Written, Ssv2Entry)> {
    let mut rng = Rng::new(o.seed, SSV2_STREAM, i);
    let class = synthetic::label_of(i);
    let length = (f64::from(o.frames) * (0.5 + rng.uniform())).round() as u32;
    let length = length.max(2);
    let (pixels, shape) =
        synthetic::render_clip_with_shape(o.seed ^ SSV2_STREAM, i, class, length, o.size);
    let id = (i + 1).to_string();
    let paths = write_frames(out, &id, '_', &pixels, length, o.size)?;
    let template = SSV2_TEMPLATES[class as usize];
    let entry = Ssv2Entry {
        id: id.clone(),
        label: template.replace("[something]", shape).to_lowercase(),
        template: template.to_string(),
        placeholders: vec![shape.to_string()],
    };
    let written = Written {
        name: id,
        paths,
        labels: vec![Vec::new(); length as usize],
    };
    Ok((written, entry))
}

/// Encodes `frames` RGB frames as `frames/<name>/<name><sep><frame:06>.jpg` (1-based); returns
/// their paths relative to `out`.
fn write_frames(
    out: &Path,
    name: &str,
    sep: char,
    pixels: &[u8],
    frames: u32,
    size: u32,
) -> Result<Vec<String>> {
    let dir = out.join("frames").join(name);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let frame_bytes = (size * size * 3) as usize;
    let mut paths = Vec::with_capacity(frames as usize);
    for (f, frame) in pixels
        .chunks_exact(frame_bytes)
        .take(frames as usize)
        .enumerate()
    {
        let file = format!("{name}{sep}{:06}.jpg", f + 1);
        let path = dir.join(&file);
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY)
            .encode(frame, size, size, image::ExtendedColorType::Rgb8)
            .map_err(|e| Error::Io {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
        // Frames are not synced one by one (that costs seconds); the lists, which name them,
        // are written and synced after all of them.
        write_atomic(&path, &jpeg, false)?;
        paths.push(format!("frames/{name}/{file}"));
    }
    Ok(paths)
}

fn to_json(path: &Path, value: &impl Serialize) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` through `path.tmp` and a rename, so `path` is never half written.
pub(super) fn write_atomic(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp: PathBuf = path.with_file_name(name);
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes)
        .and_then(|_| if sync { f.sync_all() } else { Ok(()) })
        .map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mg-flgen-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn options() -> FrameListOptions {
        FrameListOptions {
            videos: 12,
            frames: 8,
            size: 32,
            seed: 5,
            val_fraction: 0.25,
        }
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    /// A listed video: name, number, frames' paths, frames' label sets.
    type Listed = (String, u64, Vec<String>, Vec<Vec<u32>>);

    /// Parses a frame list the way PySlowFast does: video -> (video number, frames' paths,
    /// label sets), checking every line's shape on the way.
    fn parse(text: &str) -> Vec<Listed> {
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("original_vido_id video_id frame_id path labels")
        );
        let mut videos: Vec<Listed> = Vec::new();
        for line in lines {
            let row: Vec<&str> = line.split(' ').collect();
            assert_eq!(row.len(), 5, "{line}");
            let (name, number, frame) = (row[0], row[1].parse().unwrap(), row[2]);
            if videos.last().map(|v| v.0.as_str()) != Some(name) {
                assert!(videos.iter().all(|v| v.0 != name), "{name} listed twice");
                assert_eq!(number, videos.len() as u64, "{line}");
                videos.push((name.to_string(), number, Vec::new(), Vec::new()));
            }
            let v = videos.last_mut().unwrap();
            assert_eq!(v.1, number);
            assert_eq!(frame.parse::<usize>().unwrap(), v.2.len(), "{line}");
            assert!(row[4].starts_with('"') && row[4].ends_with('"'), "{line}");
            let labels = row[4].trim_matches('"');
            v.3.push(if labels.is_empty() {
                Vec::new()
            } else {
                labels.split(',').map(|l| l.parse().unwrap()).collect()
            });
            v.2.push(row[3].to_string());
        }
        videos
    }

    #[test]
    fn charades_is_deterministic_multi_label_and_complete() {
        let (a, b) = (tmp("ch-a"), tmp("ch-b"));
        let o = options();
        let sa = write_charades(&a, &o).unwrap();
        let sb = write_charades(&b, &o).unwrap();
        assert_eq!(sa, sb);
        assert_eq!((sa.train_videos, sa.val_videos), (9, 3));
        for list in ["train.csv", "val.csv"] {
            assert_eq!(read(&a.join(list)), read(&b.join(list)));
        }
        let other = tmp("ch-c");
        write_charades(
            &other,
            &FrameListOptions {
                seed: 6,
                ..o.clone()
            },
        )
        .unwrap();
        assert_ne!(read(&a.join("train.csv")), read(&other.join("train.csv")));

        let classes = read(&a.join("classes.txt"));
        assert_eq!(classes.lines().collect::<Vec<_>>(), CLASSES.to_vec());
        let (mut multi_class_video, mut unlabelled, mut overlapping, mut frames) =
            (false, false, false, 0u64);
        for list in ["train.csv", "val.csv"] {
            for (name, _, paths, labels) in parse(&read(&a.join(list))) {
                assert_eq!(name.len(), 5);
                for (f, path) in paths.iter().enumerate() {
                    assert_eq!(path, &format!("frames/{name}/{name}-{:06}.jpg", f + 1));
                    let jpeg = std::fs::read(a.join(path)).unwrap();
                    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "{path} is not a JPEG");
                }
                let distinct: HashSet<u32> = labels.iter().flatten().copied().collect();
                assert!(distinct.iter().all(|&c| (c as usize) < CLASSES.len()));
                multi_class_video |= distinct.len() >= 2;
                unlabelled |= labels.iter().any(Vec::is_empty);
                overlapping |= labels.iter().any(|l| l.len() >= 2);
                let length = paths.len() as f64 / f64::from(o.frames);
                assert!(
                    (0.7..=1.6).contains(&length),
                    "{name}: {} frames",
                    paths.len()
                );
                frames += paths.len() as u64;
            }
        }
        assert!(multi_class_video && unlabelled && overlapping);
        assert_eq!(frames, sa.frames);
        // Nothing is left at a temporary name.
        let tmp_files = std::fs::read_dir(
            a.join("frames")
                .join(&parse(&read(&a.join("train.csv")))[0].0),
        )
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "tmp")
        .count();
        assert_eq!(tmp_files, 0);
        for d in [a, b, other] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn ssv2_json_and_lists_agree() {
        let (a, b) = (tmp("ss-a"), tmp("ss-b"));
        let o = options();
        let summary = write_ssv2(&a, &o).unwrap();
        write_ssv2(&b, &o).unwrap();
        for f in [
            "train.csv",
            "val.csv",
            "something-something-v2-train.json",
            "something-something-v2-validation.json",
        ] {
            assert_eq!(read(&a.join(f)), read(&b.join(f)), "{f}");
        }

        let labels: HashMap<String, String> =
            serde_json::from_str(&read(&a.join("something-something-v2-labels.json"))).unwrap();
        assert_eq!(labels.len(), CLASSES.len());
        assert_eq!(labels["Moving something right"], "0");
        assert_eq!(labels["Turning something counterclockwise"], "9");
        assert!(labels.keys().all(|k| !k.contains('[') && !k.contains(']')));

        let mut all_ids = HashSet::new();
        let mut frames = 0;
        for (json, list, count) in [
            ("train", "train.csv", summary.train_videos),
            ("validation", "val.csv", summary.val_videos),
        ] {
            let entries: Vec<serde_json::Value> = serde_json::from_str(&read(
                &a.join(format!("something-something-v2-{json}.json")),
            ))
            .unwrap();
            let videos = parse(&read(&a.join(list)));
            assert_eq!(entries.len() as u64, count);
            let json_ids: HashSet<&str> =
                entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
            let list_ids: HashSet<&str> = videos.iter().map(|v| v.0.as_str()).collect();
            assert_eq!(json_ids, list_ids, "{json}");
            for e in &entries {
                let template = e["template"].as_str().unwrap();
                let class: u32 = labels[&template.replace(['[', ']'], "")].parse().unwrap();
                assert_eq!(template, SSV2_TEMPLATES[class as usize]);
                let shape = e["placeholders"][0].as_str().unwrap();
                assert_eq!(
                    e["label"].as_str().unwrap(),
                    template.replace("[something]", shape).to_lowercase()
                );
                all_ids.insert(e["id"].as_str().unwrap().to_string());
            }
            for (id, _, paths, frame_labels) in &videos {
                assert!(paths.len() >= 2);
                assert!(frame_labels.iter().all(Vec::is_empty));
                for (f, path) in paths.iter().enumerate() {
                    assert_eq!(path, &format!("frames/{id}/{id}_{:06}.jpg", f + 1));
                    assert!(a.join(path).is_file(), "{path}");
                }
                frames += paths.len() as u64;
            }
        }
        let expected: HashSet<String> = (1..=o.videos).map(|i| i.to_string()).collect();
        assert_eq!(all_ids, expected);
        assert_eq!(frames, summary.frames);
        for d in [a, b] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn bad_options_are_named() {
        let d = tmp("bad");
        let err = |o: FrameListOptions| write_charades(&d, &o).unwrap_err().to_string();
        assert!(err(FrameListOptions {
            videos: 0,
            ..options()
        })
        .contains("videos"));
        assert!(err(FrameListOptions {
            frames: 1,
            ..options()
        })
        .contains("frames"));
        assert!(err(FrameListOptions {
            size: 4,
            ..options()
        })
        .contains("size"));
        assert!(err(FrameListOptions {
            val_fraction: 1.0,
            ..options()
        })
        .contains("val_fraction"));
        assert!(!d.exists());
    }
}
