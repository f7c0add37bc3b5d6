//! `multigrid gen-data` and `multigrid build-store`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use multigrid::data::frame_list_gen::{self, FrameListOptions};
use multigrid::data::frame_store::encode_frames;
use multigrid::data::{
    resize::resize_short_side, synthetic, synthetic_hard, Dataset, FrameStoreWriter, StoreWriter,
};
use rayon::prelude::*;

/// The on-disk layout `gen-data` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenDataset {
    /// MP4 videos with PySlowFast's video lists, and/or clip stores.
    Kinetics,
    /// JPEG frames with multi-label frame lists.
    Charades,
    /// JPEG frames with frame lists and SSv2's JSON files.
    Ssv2,
}

/// The synthetic action task `gen-data --dataset kinetics` renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Task {
    /// 12 classes (8 directions, two rotations, approach, recede); saturates near 90% in a
    /// few epochs: the demo's.
    Simple,
    /// 24 classes (the simple task's 12 motions, each slow or fast): keeps improving over a
    /// longer schedule (the speedup benchmark's).
    Hard,
}

impl Task {
    /// Names what the generator renders today, written to `generator.txt` beside the data, so
    /// a benchmark regenerates data that an older generator wrote under the same class names.
    pub fn generator(self) -> &'static str {
        match self {
            Task::Simple => "simple 1",
            Task::Hard => "hard 3: 12 motions, rates from the lowest and highest thirds",
        }
    }

    pub fn class_names(self) -> Vec<String> {
        match self {
            Task::Simple => synthetic::CLASSES.iter().map(|c| c.to_string()).collect(),
            Task::Hard => synthetic_hard::class_names(),
        }
    }

    fn label_of(self, i: u64) -> u32 {
        match self {
            Task::Simple => synthetic::label_of(i),
            Task::Hard => synthetic_hard::label_of(i),
        }
    }

    fn render(self, seed: u64, i: u64, frames: u32, size: u32) -> Vec<u8> {
        match self {
            Task::Simple => synthetic::render_clip(seed, i, frames, size),
            Task::Hard => synthetic_hard::render_clip(seed, i, frames, size),
        }
    }
}

/// `gen-data --dataset charades|ssv2`. `kinetics_only` names the flags that apply to kinetics
/// alone, with whether each was given.
pub fn gen_frame_lists<const N: usize>(
    dataset: GenDataset,
    out: &Path,
    o: &FrameListOptions,
    kinetics_only: [(&str, bool); N],
) -> Result<(), String> {
    let name = match dataset {
        GenDataset::Kinetics => return Err("gen_frame_lists writes charades or ssv2".into()),
        GenDataset::Charades => "charades",
        GenDataset::Ssv2 => "ssv2",
    };
    if let Some((flag, _)) = kinetics_only.iter().find(|(_, given)| *given) {
        return Err(format!(
            "{flag} applies to --dataset kinetics only, not {name}"
        ));
    }
    let start = Instant::now();
    let summary = match dataset {
        GenDataset::Charades => frame_list_gen::write_charades(out, o),
        _ => frame_list_gen::write_ssv2(out, o),
    }
    .map_err(|e| e.to_string())?;
    println!(
        "wrote {name}: {} train + {} val videos, {} frames of about {} at {}x{} ({} classes) to {} in {:.1} s",
        summary.train_videos,
        summary.val_videos,
        summary.frames,
        o.frames,
        o.size,
        o.size,
        summary.classes,
        out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(Debug, Clone)]
pub struct GenOptions {
    pub out: PathBuf,
    pub clips: u64,
    pub frames: u32,
    pub size: u32,
    pub seed: u64,
    pub val_fraction: f64,
    pub store: bool,
    pub videos: bool,
    pub fps: u32,
    pub task: Task,
}

const SPLITS: [&str; 3] = ["train", "val", "test"];

/// Split of clip `i` of a task of `classes` classes. Clip i has class c = i % classes in round
/// k = i / classes; with m = 1 / val_fraction it goes to val when (k + c) % m == m - 1 and to
/// test when it is m - 2. Every class reaches every split, and even a small dataset has a val
/// and a test clip in each round.
fn split_of(i: u64, val_fraction: f64, classes: u64) -> usize {
    let m = (1.0 / val_fraction.clamp(0.01, 0.5)).round() as u64;
    match (i / classes + i % classes) % m {
        r if r == m - 1 => 1,
        r if r == m - 2 => 2,
        _ => 0,
    }
}

pub fn gen_data(o: &GenOptions) -> Result<(), String> {
    if !o.videos && !o.store {
        return Err("nothing to write: pass --store or leave videos on".into());
    }
    if o.size % 2 != 0 || o.size < 16 || o.frames == 0 || o.clips == 0 {
        return Err("--size must be even and >= 16; --frames and --clips > 0".into());
    }
    let videos = o.out.join("videos");
    std::fs::create_dir_all(&videos).map_err(|e| format!("{}: {e}", videos.display()))?;
    let start = Instant::now();
    let classes = o.task.class_names();
    // Render (and encode) in parallel; the stores are appended in clip order afterwards.
    let mut writers: Vec<Option<StoreWriter>> = SPLITS
        .iter()
        .map(|s| {
            o.store
                .then(|| {
                    StoreWriter::create(o.out.join(format!("{s}.mgstore")))
                        .map_err(|e| e.to_string())
                })
                .transpose()
        })
        .collect::<Result<_, _>>()?;
    let mut lists: Vec<String> = vec![String::new(); 3];
    let chunk = 64u64;
    for first in (0..o.clips).step_by(chunk as usize) {
        let ids: Vec<u64> = (first..(first + chunk).min(o.clips)).collect();
        let rendered: Vec<(u64, Vec<u8>)> = ids
            .par_iter()
            .map(|&i| {
                let frames = o.task.render(o.seed, i, o.frames, o.size);
                if o.videos {
                    let path = videos.join(format!("{i:06}.mp4"));
                    write_video(&path, &frames, o)?;
                }
                Ok((i, frames))
            })
            .collect::<Result<_, String>>()?;
        for (i, frames) in rendered {
            let split = split_of(i, o.val_fraction, classes.len() as u64);
            let label = o.task.label_of(i);
            if o.videos {
                lists[split].push_str(&format!("videos/{i:06}.mp4 {label}\n"));
            }
            if let Some(w) = writers[split].as_mut() {
                w.add_at_fps(
                    &frames,
                    o.frames,
                    o.size,
                    o.size,
                    label,
                    Some(f64::from(o.fps)),
                )
                .map_err(|e| e.to_string())?;
            }
        }
    }
    if o.videos {
        for (s, list) in SPLITS.iter().zip(&lists) {
            write_atomic(&o.out.join(format!("{s}.csv")), list.as_bytes())?;
        }
    }
    for w in writers.into_iter().flatten() {
        w.finish().map_err(|e| e.to_string())?;
    }
    // The class names, in label order: for people, and for the benchmark's chance level.
    let names: String = classes.iter().map(|c| format!("{c}\n")).collect();
    write_atomic(&o.out.join("classes.txt"), names.as_bytes())?;
    write_atomic(
        &o.out.join("generator.txt"),
        format!("{}\n", o.task.generator()).as_bytes(),
    )?;
    println!(
        "wrote {} clips of {} frames at {}x{} ({} classes) to {} in {:.1} s",
        o.clips,
        o.frames,
        o.size,
        o.size,
        classes.len(),
        o.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(feature = "video")]
fn write_video(path: &Path, frames: &[u8], o: &GenOptions) -> Result<(), String> {
    multigrid::data::video::encode_mp4(path, frames, o.frames, o.size, o.size, o.fps)
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "video"))]
fn write_video(_: &Path, _: &[u8], o: &GenOptions) -> Result<(), String> {
    let _ = o.fps;
    Err(
        "this build has no video encoding (the `video` feature is off); use --store --no-videos"
            .into(),
    )
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// What `build-store` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreFormat {
    /// Decoded u8 frames (.mgstore).
    Raw,
    /// Each frame a JPEG (.mgframes).
    Jpeg,
}

/// One of the two store writers.
enum AnyWriter {
    Raw(StoreWriter),
    Jpeg(FrameStoreWriter),
}

/// Stores every clip of a split (its video list, else its clip store), optionally pre-resized,
/// as decoded frames or as JPEG frames.
pub fn build_store(
    data: &Path,
    split: &str,
    out: &Path,
    short_side: Option<u32>,
    format: StoreFormat,
    quality: u8,
) -> Result<(), String> {
    let csv = data.join(format!("{split}.csv"));
    let source = if csv.exists() {
        Dataset::video_list(data, split)
    } else {
        Dataset::store(data.join(format!("{split}.mgstore")))
    }
    .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut writer = match format {
        StoreFormat::Raw => AnyWriter::Raw(StoreWriter::create(out).map_err(|e| e.to_string())?),
        StoreFormat::Jpeg => {
            AnyWriter::Jpeg(FrameStoreWriter::create(out, quality).map_err(|e| e.to_string())?)
        }
    };
    let jpeg = (format == StoreFormat::Jpeg).then_some(quality);
    let n = source.len();
    let mut failed = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(32) {
        let decoded: Vec<_> = chunk
            .par_iter()
            .map(|&i| {
                let clip = read_whole(&source, i, short_side)?;
                // Encoding is the slow part of a JPEG store: on the workers too.
                let encoded = match jpeg {
                    Some(q) => {
                        let (f, t, h, w, _) = &clip;
                        Some(encode_frames(f, *t, *h, *w, q).map_err(|e| e.to_string())?)
                    }
                    None => None,
                };
                Ok::<_, String>((clip, encoded, source.label(i).map_err(|e| e.to_string())?))
            })
            .collect();
        for (result, &i) in decoded.into_iter().zip(chunk) {
            match result {
                Ok(((frames, t, h, w, fps), encoded, label)) => {
                    match (&mut writer, encoded) {
                        (AnyWriter::Raw(wr), _) => wr.add_at_fps(&frames, t, h, w, label, fps),
                        (AnyWriter::Jpeg(wr), Some(enc)) => wr.add_encoded(&enc, h, w, label, fps),
                        (AnyWriter::Jpeg(_), None) => unreachable!("encoded above"),
                    }
                    .map_err(|e| e.to_string())?;
                }
                Err(e) => {
                    failed += 1;
                    eprintln!(
                        "multigrid: skipping clip {i} of {}: {e}",
                        source_name(&source)
                    );
                }
            }
        }
    }
    match writer {
        AnyWriter::Raw(w) => w.finish(),
        AnyWriter::Jpeg(w) => w.finish(),
    }
    .map_err(|e| e.to_string())?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    println!(
        "stored {} of {n} clips of {} in {} ({:.1} MB) in {:.1} s",
        n - failed,
        source_name(&source),
        out.display(),
        bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn source_name(d: &Dataset) -> String {
    match d {
        Dataset::VideoList { list, .. } => list.display().to_string(),
        Dataset::Store(s) => s.path().display().to_string(),
        other => format!("{other:?}"),
    }
}

/// Frames, count, height, width and frame rate (when known) of clip `i`, resized so its short
/// side is `short_side` when that is smaller.
fn read_whole(source: &Dataset, i: usize, short_side: Option<u32>) -> Result<Clip, String> {
    let (frames, n, h, w, fps) = match source {
        Dataset::VideoList { entries, .. } => {
            let (f, n, h, w, fps) = decode_all(&entries[i].0)?;
            (f, n, h, w, Some(fps))
        }
        Dataset::Store(s) => {
            let info = s.info(i).map_err(|e| e.to_string())?;
            let f = s.frames(i).map_err(|e| e.to_string())?.to_vec();
            (f, info.num_frames, info.height, info.width, info.fps())
        }
        other => return Err(format!("cannot store from {other:?}")),
    };
    Ok(match short_side {
        Some(s) if s < h.min(w) => {
            let (f, rh, rw) = resize_short_side(&frames, n, h, w, s);
            (f, n, rh, rw, fps)
        }
        _ => (frames, n, h, w, fps),
    })
}

/// Frames, count, height, width and frame rate of a clip.
type Clip = (Vec<u8>, u32, u32, u32, Option<f64>);

/// Frames, count, height, width and frame rate of a whole video.
type Decoded = (Vec<u8>, u32, u32, u32, f64);

#[cfg(feature = "video")]
fn decode_all(path: &Path) -> Result<Decoded, String> {
    use multigrid::data::video;
    let info = video::probe(path).map_err(|e| e.to_string())?;
    let d = video::decode_range(path, 0, info.num_frames - 1).map_err(|e| e.to_string())?;
    Ok((d.frames, d.num_frames, d.height, d.width, info.fps))
}

#[cfg(not(feature = "video"))]
fn decode_all(path: &Path) -> Result<Decoded, String> {
    Err(format!(
        "{}: this build has no video decoding (the `video` feature is off)",
        path.display()
    ))
}
