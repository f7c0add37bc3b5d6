//! PySlowFast's frame lists, the form Charades and Something-Something V2 ship in: every video
//! a directory of JPEG frames, listed one frame per line as
//! `original_vido_id video_id frame_id path labels` after that header. Charades labels each
//! frame with a set of classes; SSv2 labels whole videos through its JSON files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::collate::{self, Clip, Draw, FrameRule};
use crate::error::{Error, Result};

/// The labels of one video.
#[derive(Debug, Clone)]
enum Labels {
    /// SSv2: one class per video.
    Class(u32),
    /// Charades training: each frame's set; a clip takes the union over the frames it spans.
    PerFrame(Vec<Vec<u32>>),
    /// Charades validation and test: the union over the whole video, whatever a view spans
    /// (PySlowFast's `convert_to_video_level_labels`).
    Video(Vec<u32>),
}

#[derive(Debug, Clone)]
struct Video {
    name: String,
    frames: Vec<PathBuf>,
    labels: Labels,
}

/// The videos of one split of Charades or SSv2.
#[derive(Debug, Clone)]
pub struct FrameLists {
    list: PathBuf,
    rule: FrameRule,
    videos: Vec<Video>,
}

/// The split's file: PySlowFast reads `train.csv` for training and `val.csv` for both
/// validation and test.
fn list_name(split: &str) -> &'static str {
    if split == "train" {
        "train.csv"
    } else {
        "val.csv"
    }
}

/// Whether `dir` holds the frame list that `split` reads.
pub fn split_exists(dir: &Path, split: &str) -> bool {
    dir.join(list_name(split)).exists()
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// One parsed frame list: videos in the order they first appear (Python's dict order), each
/// with its frames' paths and per-frame label sets.
type Parsed = Vec<(String, Vec<PathBuf>, Vec<Vec<u32>>)>;

/// Reads a frame list; frame paths are joined to `base` (the data directory joined with
/// `data.path_prefix`).
fn parse(list: &Path, base: &Path) -> Result<Parsed> {
    let text = read(list)?;
    let mut lines = text.lines().enumerate();
    let at = |n: usize| format!("{}:{}", list.display(), n + 1);
    match lines.next() {
        Some((_, h)) if h.starts_with("original_vido_id") => {}
        _ => {
            return Err(Error::Data(format!(
                "{}: a frame list starts with the header `original_vido_id video_id frame_id path labels`",
                at(0)
            )))
        }
    }
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut videos: Parsed = Vec::new();
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let row: Vec<&str> = line.split_whitespace().collect();
        let [name, _, _, path, labels] = row[..] else {
            return Err(Error::Data(format!(
                "{}: expected 5 fields `original_vido_id video_id frame_id path labels`, got {}",
                at(n),
                row.len()
            )));
        };
        if path.contains('\0') {
            return Err(Error::Data(format!(
                "{}: the path contains a NUL byte",
                at(n)
            )));
        }
        let labels = labels.replace('"', "");
        let labels = if labels.is_empty() {
            Vec::new()
        } else {
            labels
                .split(',')
                .map(|l| {
                    l.parse::<u32>().map_err(|_| {
                        Error::Data(format!("{}: label {l:?} is not a class number", at(n)))
                    })
                })
                .collect::<Result<Vec<u32>>>()?
        };
        let k = *index.entry(name.to_string()).or_insert_with(|| {
            videos.push((name.to_string(), Vec::new(), Vec::new()));
            videos.len() - 1
        });
        videos[k].1.push(base.join(path));
        videos[k].2.push(labels);
    }
    if videos.is_empty() {
        return Err(Error::Data(format!("{} lists no frames", list.display())));
    }
    Ok(videos)
}

fn union(sets: &[Vec<u32>]) -> Vec<u32> {
    let mut all: Vec<u32> = sets.iter().flatten().copied().collect();
    all.sort_unstable();
    all.dedup();
    all
}

fn json(path: &Path) -> Result<serde_json::Value> {
    serde_json::from_str(&read(path)?)
        .map_err(|e| Error::Data(format!("{}: not valid JSON: {e}", path.display())))
}

impl FrameLists {
    /// Charades' `split`: frame lists whose last column is each frame's label set.
    pub fn charades(dir: &Path, split: &str, path_prefix: &str) -> Result<FrameLists> {
        let list = dir.join(list_name(split));
        let videos = parse(&list, &dir.join(path_prefix))?
            .into_iter()
            .map(|(name, frames, sets)| Video {
                name,
                frames,
                labels: if split == "train" {
                    Labels::PerFrame(sets)
                } else {
                    Labels::Video(union(&sets))
                },
            })
            .collect();
        Ok(FrameLists {
            list,
            rule: FrameRule::Charades,
            videos,
        })
    }

    /// SSv2's `split`: classes from `something-something-v2-labels.json` (template without
    /// brackets -> class id), each video's template from `something-something-v2-train.json`
    /// or `-validation.json`, frames from `train.csv` or `val.csv`; videos in the JSON's order.
    pub fn ssv2(dir: &Path, split: &str, path_prefix: &str) -> Result<FrameLists> {
        let names_path = dir.join("something-something-v2-labels.json");
        let classes = json(&names_path)?;
        let classes = classes.as_object().ok_or_else(|| {
            Error::Data(format!(
                "{}: expected an object of template -> class id",
                names_path.display()
            ))
        })?;
        let videos_path = dir.join(format!(
            "something-something-v2-{}.json",
            if split == "train" {
                "train"
            } else {
                "validation"
            }
        ));
        let entries = json(&videos_path)?;
        let entries = entries.as_array().ok_or_else(|| {
            Error::Data(format!(
                "{}: expected an array of videos",
                videos_path.display()
            ))
        })?;
        let mut labelled = Vec::with_capacity(entries.len());
        for (k, e) in entries.iter().enumerate() {
            let field = |key: &str| {
                e.get(key).and_then(|v| v.as_str()).ok_or_else(|| {
                    Error::Data(format!(
                        "{}: video {k} has no string {key:?}",
                        videos_path.display()
                    ))
                })
            };
            let (id, template) = (field("id")?, field("template")?);
            let template = template.replace(['[', ']'], "");
            let class = classes.get(&template).ok_or_else(|| {
                Error::Data(format!(
                    "{}: video {id}'s template {template:?} is not in {}",
                    videos_path.display(),
                    names_path.display()
                ))
            })?;
            // The released file writes ids as strings ("0"); a number is taken as well.
            let class = class
                .as_str()
                .and_then(|c| c.trim().parse::<u32>().ok())
                .or_else(|| class.as_u64().and_then(|c| u32::try_from(c).ok()))
                .ok_or_else(|| {
                    Error::Data(format!(
                        "{}: the class of {template:?} is {class}, not a class number",
                        names_path.display()
                    ))
                })?;
            labelled.push((id.to_string(), class));
        }
        let list = dir.join(list_name(split));
        let parsed = parse(&list, &dir.join(path_prefix))?;
        if parsed.len() != labelled.len() {
            return Err(Error::Data(format!(
                "{} lists {} videos but {} lists {}",
                list.display(),
                parsed.len(),
                videos_path.display(),
                labelled.len()
            )));
        }
        let mut frames: HashMap<String, Vec<PathBuf>> =
            parsed.into_iter().map(|(name, f, _)| (name, f)).collect();
        let videos: Vec<Video> = labelled
            .into_iter()
            .filter_map(|(name, class)| {
                let frames = frames.remove(&name)?;
                Some(Video {
                    name,
                    frames,
                    labels: Labels::Class(class),
                })
            })
            .collect();
        if videos.is_empty() {
            return Err(Error::Data(format!(
                "no video of {} is in {}",
                videos_path.display(),
                list.display()
            )));
        }
        Ok(FrameLists {
            list,
            rule: FrameRule::Segments,
            videos,
        })
    }

    pub fn list(&self) -> &Path {
        &self.list
    }

    pub fn len(&self) -> usize {
        self.videos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.videos.is_empty()
    }

    pub fn rule(&self) -> FrameRule {
        self.rule
    }

    pub fn is_multi_label(&self) -> bool {
        !matches!(
            self.videos.first().map(|v| &v.labels),
            Some(Labels::Class(_))
        )
    }

    fn video(&self, i: usize) -> Result<&Video> {
        self.videos.get(i).ok_or_else(|| {
            Error::OutOfRange(format!(
                "video {i} is past the end of {}",
                self.list.display()
            ))
        })
    }

    /// The frames of video `i`.
    pub fn num_frames(&self, i: usize) -> Result<usize> {
        Ok(self.video(i)?.frames.len())
    }

    /// The name (`original_vido_id`) and frame paths of video `i`.
    pub fn video_frames(&self, i: usize) -> Result<(&str, &[PathBuf])> {
        let v = self.video(i)?;
        Ok((&v.name, &v.frames))
    }

    /// The class of video `i`: SSv2 only, Charades videos have label sets.
    pub fn label(&self, i: usize) -> Result<u32> {
        let v = self.video(i)?;
        match v.labels {
            Labels::Class(c) => Ok(c),
            _ => Err(Error::InvalidArgument(format!(
                "{} is multi-label (video {}): set data.multi_label and model.loss_func bce_logit",
                self.list.display(),
                v.name
            ))),
        }
    }

    /// The classes of video `i` over frames `span` (both included): PySlowFast's
    /// `aggregate_labels` of the frames a training clip spans, the video's own set otherwise.
    pub fn labels_in(&self, i: usize, span: [u32; 2]) -> Result<Vec<u32>> {
        let v = self.video(i)?;
        Ok(match &v.labels {
            Labels::Class(c) => vec![*c],
            Labels::Video(set) => set.clone(),
            Labels::PerFrame(sets) => {
                let last = sets.len().saturating_sub(1);
                let (a, b) = (span[0] as usize, (span[1] as usize).min(last));
                union(sets.get(a.min(b)..=b).unwrap_or(&[]))
            }
        })
    }

    /// The largest class number any video carries.
    pub fn max_label(&self) -> Option<u32> {
        self.videos
            .iter()
            .flat_map(|v| match &v.labels {
                Labels::Class(c) => vec![*c],
                Labels::Video(set) => set.clone(),
                Labels::PerFrame(sets) => union(sets),
            })
            .max()
    }

    /// Decodes the frames of video `i` that `choose` picks from its (frames, height, width)
    /// and collates them into `out`; returns the first and last frame the clip spans.
    pub fn collate_clip(
        &self,
        i: usize,
        t: u32,
        s: u32,
        norm: &collate::Normalize,
        choose: impl FnOnce(u32, u32, u32) -> Draw,
        out: &mut [f32],
    ) -> Result<[u32; 2]> {
        let v = self.video(i)?;
        let n = u32::try_from(v.frames.len())
            .map_err(|_| Error::Data(format!("video {} has more frames than 2^32", v.name)))?;
        let (w, h) = dimensions(&v.frames[0])?;
        let draw = choose(n, h, w);
        let idx = draw.frames.unwrap_or_else(|| {
            collate::temporal_indices(draw.params.start_frame, draw.params.stride, t, n)
        });
        if idx.len() != t as usize {
            return Err(Error::Internal(format!(
                "the sampler picked {} frames for a clip of {t}",
                idx.len()
            )));
        }
        let frame = h as usize * w as usize * 3;
        let mut gathered: Vec<u8> = Vec::with_capacity(idx.len() * frame);
        let mut last: Option<u32> = None;
        for &f in &idx {
            if last == Some(f) {
                // Clamped and segment picks repeat frames: decode each once.
                gathered.extend_from_within(gathered.len() - frame..);
                continue;
            }
            let path = &v.frames[(f as usize).min(v.frames.len() - 1)];
            let (pixels, fw, fh) = decode(path)?;
            if (fw, fh) != (w, h) {
                return Err(Error::Decode {
                    path: path.clone(),
                    reason: format!(
                        "the frame is {fw}x{fh} but the video's first frame is {w}x{h}"
                    ),
                });
            }
            gathered.extend_from_slice(&pixels);
            last = Some(f);
        }
        let clip = Clip {
            frames: &gathered,
            num_frames: t,
            height: h,
            width: w,
        };
        // PySlowFast decodes these JPEG frames with cv2 (BGR) where we decode RGB: the config's
        // normalisation and DATA.REVERSE_INPUT_CHANNEL mean what they mean for BGR frames.
        let norm = norm.for_bgr_decoder();
        collate::collate_gathered(clip, draw.params, s, &norm, out)?;
        Ok([idx[0], idx[idx.len() - 1]])
    }
}

fn decode_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Decode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// (width, height) from the image's header, without decoding it.
fn dimensions(path: &Path) -> Result<(u32, u32)> {
    image::ImageReader::open(path)
        .map_err(|e| decode_err(path, e))?
        .with_guessed_format()
        .map_err(|e| decode_err(path, e))?
        .into_dimensions()
        .map_err(|e| decode_err(path, e))
}

/// RGB bytes, row-major, with the width and height.
fn decode(path: &Path) -> Result<(Vec<u8>, u32, u32)> {
    let img = image::ImageReader::open(path)
        .map_err(|e| decode_err(path, e))?
        .with_guessed_format()
        .map_err(|e| decode_err(path, e))?
        .decode()
        .map_err(|e| decode_err(path, e))?
        .into_rgb8();
    let (w, h) = img.dimensions();
    Ok((img.into_raw(), w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mg-frames-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const HEADER: &str = "original_vido_id video_id frame_id path labels\n";

    #[test]
    fn charades_labels_are_the_union_over_the_span_in_training_and_the_video_otherwise() {
        let d = tmp("charades");
        let rows = "A 0 0 a/1.jpg \"\"\nA 0 1 a/2.jpg \"3\"\nB 1 0 b/1.jpg \"1,2\"\nA 0 2 a/3.jpg \"3,5\"\nA 0 3 a/4.jpg \"7\"\n";
        write(&d, "train.csv", &format!("{HEADER}{rows}"));
        write(&d, "val.csv", &format!("{HEADER}{rows}"));
        let train = FrameLists::charades(&d, "train", "").unwrap();
        assert_eq!(train.len(), 2);
        assert!(train.is_multi_label());
        assert_eq!(train.num_frames(0).unwrap(), 4);
        assert_eq!(train.labels_in(0, [0, 0]).unwrap(), Vec::<u32>::new());
        assert_eq!(train.labels_in(0, [1, 2]).unwrap(), vec![3, 5]);
        assert_eq!(train.labels_in(0, [0, 9]).unwrap(), vec![3, 5, 7]);
        assert_eq!(train.labels_in(1, [0, 0]).unwrap(), vec![1, 2]);
        assert_eq!(train.max_label(), Some(7));
        assert!(train.label(0).is_err());
        // Validation and test read val.csv, with every view labelled by the whole video.
        let test = FrameLists::charades(&d, "test", "").unwrap();
        assert_eq!(test.list(), d.join("val.csv"));
        assert_eq!(test.labels_in(0, [0, 0]).unwrap(), vec![3, 5, 7]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_frame_lists_name_the_line() {
        let d = tmp("bad");
        write(&d, "train.csv", "video frame path\n");
        let e = FrameLists::charades(&d, "train", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("train.csv:1") && e.contains("header"), "{e}");
        write(&d, "train.csv", &format!("{HEADER}A 0 0 a.jpg\n"));
        let e = FrameLists::charades(&d, "train", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("train.csv:2") && e.contains("got 4"), "{e}");
        write(&d, "train.csv", &format!("{HEADER}A 0 0 a.jpg \"x\"\n"));
        let e = FrameLists::charades(&d, "train", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("train.csv:2") && e.contains("\"x\""), "{e}");
        write(&d, "train.csv", HEADER);
        let e = FrameLists::charades(&d, "train", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no frames"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn ssv2_takes_classes_from_the_templates_in_the_json_order() {
        let d = tmp("ssv2");
        write(
            &d,
            "something-something-v2-labels.json",
            r#"{"Moving something left": "1", "Moving something right": "0"}"#,
        );
        write(
            &d,
            "something-something-v2-validation.json",
            r#"[{"id": "7", "template": "Moving [something] left"},
                {"id": "3", "template": "Moving [something] right"}]"#,
        );
        write(
            &d,
            "val.csv",
            &format!("{HEADER}3 0 0 3/1.jpg \"\"\n3 0 1 3/2.jpg \"\"\n7 1 0 7/1.jpg \"\"\n"),
        );
        let v = FrameLists::ssv2(&d, "test", "frames").unwrap();
        assert_eq!(v.len(), 2);
        assert!(!v.is_multi_label());
        assert_eq!((v.label(0).unwrap(), v.label(1).unwrap()), (1, 0));
        assert_eq!(v.num_frames(1).unwrap(), 2);
        assert_eq!(v.videos[1].frames[0], d.join("frames").join("3/1.jpg"));
        // A template the label map lacks, and a count mismatch, are named.
        write(
            &d,
            "something-something-v2-validation.json",
            r#"[{"id": "7", "template": "Spinning [something]"}, {"id": "3", "template": "Moving [something] right"}]"#,
        );
        let e = FrameLists::ssv2(&d, "val", "").unwrap_err().to_string();
        assert!(e.contains("Spinning something"), "{e}");
        write(
            &d,
            "something-something-v2-validation.json",
            r#"[{"id": "3", "template": "Moving [something] right"}]"#,
        );
        let e = FrameLists::ssv2(&d, "val", "").unwrap_err().to_string();
        assert!(e.contains("lists 2 videos") && e.contains("lists 1"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
