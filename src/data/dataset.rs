//! A dataset is a list of labelled clips: PySlowFast's `path label` CSV files of videos, or a
//! clip store. [`load_batch`] turns a plan step into its collated batch, replacing clips that
//! fail to decode.

use std::path::{Path, PathBuf};

use crate::collate::{
    self, batch_len, temporal_indices_scaled, Clip, ClipParams, Draw, FrameRule, Rng,
};
use crate::error::{Error, Result};
use crate::plan::{Plan, Step};

use super::frame_list::FrameLists;
use super::store::ClipStore;

/// Where clips come from.
pub enum Dataset {
    /// Videos listed as `path label` lines (paths relative to the list's directory).
    VideoList {
        list: PathBuf,
        entries: Vec<(PathBuf, u32)>,
    },
    Store(ClipStore),
    /// Charades or SSv2 frame lists of JPEG frames (`train.dataset`).
    FrameLists(FrameLists),
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dataset::VideoList { list, entries } => {
                write!(f, "VideoList({}, {} videos)", list.display(), entries.len())
            }
            Dataset::Store(s) => write!(f, "Store({}, {} clips)", s.path().display(), s.len()),
            Dataset::FrameLists(l) => {
                write!(f, "FrameLists({}, {} videos)", l.list().display(), l.len())
            }
        }
    }
}

/// One collated batch of a plan step.
#[derive(Debug)]
pub struct Batch {
    pub step: u64,
    pub num_frames: u32,
    pub crop_size: u32,
    /// Dataset indices actually used (after replacing failed clips).
    pub indices: Vec<u64>,
    /// Class indices, one per clip; empty for a multi-label task, which fills `targets`.
    pub labels: Vec<i64>,
    /// Multi-hot targets [N, model.num_classes] of a multi-label task (`data.multi_label`).
    pub targets: Option<Vec<f32>>,
    /// [N, 3, T/alpha, S, S], when alpha > 0.
    pub slow: Option<Vec<f32>>,
    /// [N, 3, T, S, S].
    pub fast: Vec<f32>,
    /// Clips that failed and were replaced, with the reason.
    pub failures: Vec<String>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

impl Dataset {
    /// Reads `dir/{split}.csv` in PySlowFast's format: one `path label` per line, separated by
    /// a space (or a comma); relative paths are taken from `dir`.
    pub fn video_list(dir: impl AsRef<Path>, split: &str) -> Result<Dataset> {
        let dir = dir.as_ref();
        let list = dir.join(format!("{split}.csv"));
        let text = std::fs::read_to_string(&list).map_err(|source| Error::Io {
            path: list.clone(),
            source,
        })?;
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (path, label) = line.rsplit_once([' ', ',']).ok_or_else(|| {
                Error::Data(format!(
                    "{}:{}: expected `path label`, got {line:?}",
                    list.display(),
                    n + 1
                ))
            })?;
            let label: u32 = label.trim().parse().map_err(|_| {
                Error::Data(format!(
                    "{}:{}: label {label:?} is not a class number",
                    list.display(),
                    n + 1
                ))
            })?;
            let path = path.trim();
            // FFmpeg takes C strings: a NUL inside a path cannot name a file.
            if path.contains('\0') {
                return Err(Error::Data(format!(
                    "{}:{}: the path contains a NUL byte",
                    list.display(),
                    n + 1
                )));
            }
            let path = Path::new(path);
            entries.push((
                if path.is_absolute() {
                    path.to_path_buf()
                } else {
                    dir.join(path)
                },
                label,
            ));
        }
        if entries.is_empty() {
            return Err(Error::Data(format!("{} lists no videos", list.display())));
        }
        Ok(Dataset::VideoList { list, entries })
    }

    pub fn store(path: impl AsRef<Path>) -> Result<Dataset> {
        Ok(Dataset::Store(ClipStore::open(path)?))
    }

    pub fn len(&self) -> usize {
        match self {
            Dataset::VideoList { entries, .. } => entries.len(),
            Dataset::Store(s) => s.len(),
            Dataset::FrameLists(l) => l.len(),
        }
    }

    /// How a clip's frames are picked: Kinetics' rule for video lists and stores, Charades' or
    /// SSv2's for their frame lists.
    pub fn frame_rule(&self) -> FrameRule {
        match self {
            Dataset::FrameLists(l) => l.rule(),
            _ => FrameRule::Linspace,
        }
    }

    /// Whether clips carry label sets (Charades) rather than one class.
    pub fn is_multi_label(&self) -> bool {
        matches!(self, Dataset::FrameLists(l) if l.is_multi_label())
    }

    /// The classes of clip `i` over the frames `span` it was sampled from (both included):
    /// Charades' union of the frames' label sets in training, the video's set otherwise, and
    /// the one class of a single-label dataset.
    pub fn labels_in(&self, i: usize, span: [u32; 2]) -> Result<Vec<u32>> {
        match self {
            Dataset::FrameLists(l) => l.labels_in(i, span),
            _ => Ok(vec![self.label(i)?]),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn label(&self, i: usize) -> Result<u32> {
        match self {
            Dataset::VideoList { entries, list } => entries.get(i).map(|e| e.1).ok_or_else(|| {
                Error::OutOfRange(format!("clip {i} is past the end of {}", list.display()))
            }),
            Dataset::Store(s) => Ok(s.info(i)?.label),
            Dataset::FrameLists(l) => l.label(i),
        }
    }

    /// Number of classes: one more than the largest label. Errors: a label at or above
    /// `model.num_classes`' limit.
    pub fn num_classes(&self) -> Result<u32> {
        let limit = crate::schedule::config::limits::MAX_CLASSES;
        if let Dataset::FrameLists(l) = self {
            let max = l.max_label().unwrap_or(0);
            if max >= limit {
                return Err(Error::Data(format!(
                    "{} has label {max}; labels are below {limit}",
                    l.list().display()
                )));
            }
            return Ok(max + 1);
        }
        let mut max = 0;
        for i in 0..self.len() {
            let label = self.label(i)?;
            if label >= limit {
                return Err(Error::Data(format!(
                    "clip {i} has label {label}; labels are below {limit}"
                )));
            }
            max = max.max(label);
        }
        Ok(max + 1)
    }

    /// Collates clip `i` at T frames and an S x S crop into `out` ([3, T, S, S]) with the draw
    /// `choose` returns for (frames, height, width); only the frames the clip needs are
    /// decoded. Start and stride count frames at `target_fps` (`data.target_fps`) when the
    /// clip's own rate is known, so a 60 fps video spans as many seconds as a 30 fps one; a
    /// draw's explicit frames (the frame-list rules) are the clip's own. Returns the first and
    /// last frame the clip spans.
    #[allow(clippy::too_many_arguments)]
    pub fn collate_clip(
        &self,
        i: usize,
        t: u32,
        s: u32,
        norm: &collate::Normalize,
        target_fps: u32,
        choose: impl FnOnce(u32, u32, u32) -> Draw,
        out: &mut [f32],
    ) -> Result<[u32; 2]> {
        match self {
            Dataset::Store(store) => {
                let info = store.info(i)?;
                let frames = store.frames(i)?;
                let scale = collate::fps_scale(info.fps(), target_fps);
                let at_target = collate::frames_at_scale(info.num_frames, scale);
                let d = choose(at_target, info.height, info.width);
                let clip = Clip {
                    frames,
                    num_frames: info.num_frames,
                    height: info.height,
                    width: info.width,
                };
                let p = d.params;
                if scale == 1.0 && d.frames.is_none() {
                    collate::collate_explicit(&[clip], &[p], t, s, norm, out)?;
                    let idx =
                        collate::temporal_indices(p.start_frame, p.stride, t, info.num_frames);
                    return Ok(span_of(&idx));
                }
                let idx = d.frames.unwrap_or_else(|| {
                    temporal_indices_scaled(p.start_frame, p.stride, t, info.num_frames, scale)
                });
                collate_frames(&clip, 0, &idx, p, s, norm, out)?;
                Ok(span_of(&idx))
            }
            Dataset::VideoList { entries, list } => {
                let path = &entries
                    .get(i)
                    .ok_or_else(|| {
                        Error::OutOfRange(format!("clip {i} is past the end of {}", list.display()))
                    })?
                    .0;
                decode_and_collate(path, t, s, norm, target_fps, choose, out)
            }
            Dataset::FrameLists(l) => l.collate_clip(i, t, s, norm, choose, out),
        }
    }
}

fn span_of(idx: &[u32]) -> [u32; 2] {
    [
        idx.first().copied().unwrap_or(0),
        idx.last().copied().unwrap_or(0),
    ]
}

/// Collates the frames `idx` (numbered from `first`, clamped to the clip) of `clip` with
/// `p`'s spatial parameters: the T frames are gathered first, so the collator's own temporal
/// sampling over them is the identity and the indices are kept exactly.
fn collate_frames(
    clip: &Clip,
    first: u32,
    idx: &[u32],
    p: ClipParams,
    s: u32,
    norm: &collate::Normalize,
    out: &mut [f32],
) -> Result<()> {
    // The collator checks clips too, but only after this gather, which must not index an
    // empty or short clip first (a store may list one).
    let need = collate::clip_bytes(clip.num_frames, clip.height, clip.width);
    if clip.num_frames == 0 || need.is_none_or(|n| n == 0 || clip.frames.len() < n) {
        return Err(Error::InvalidArgument(format!(
            "clip of {} frames of {}x{} with {} bytes cannot be sampled",
            clip.num_frames,
            clip.height,
            clip.width,
            clip.frames.len()
        )));
    }
    let frame = clip.height as usize * clip.width as usize * 3;
    let mut gathered = Vec::with_capacity(idx.len() * frame);
    for &f in idx {
        let k = (f.saturating_sub(first) as usize).min(clip.num_frames as usize - 1);
        gathered.extend_from_slice(&clip.frames[k * frame..(k + 1) * frame]);
    }
    let gathered = Clip {
        frames: &gathered,
        num_frames: idx.len() as u32,
        ..*clip
    };
    collate::collate_gathered(gathered, p, s, norm, out)
}

#[cfg(feature = "video")]
fn decode_and_collate(
    path: &Path,
    t: u32,
    s: u32,
    norm: &collate::Normalize,
    target_fps: u32,
    choose: impl FnOnce(u32, u32, u32) -> Draw,
    out: &mut [f32],
) -> Result<[u32; 2]> {
    use super::video;
    let info = video::probe(path)?;
    let scale = collate::fps_scale(Some(info.fps), target_fps);
    let d = choose(
        collate::frames_at_scale(info.num_frames, scale),
        info.height,
        info.width,
    );
    let p = d.params;
    let idx = d.frames.unwrap_or_else(|| {
        temporal_indices_scaled(p.start_frame, p.stride, t, info.num_frames, scale)
    });
    let (lo, hi) = (
        idx.iter().copied().min().unwrap_or(0),
        idx.iter().copied().max().unwrap_or(0),
    );
    let d = video::decode_range(path, lo, hi)?;
    let clip = Clip {
        frames: &d.frames,
        num_frames: d.num_frames,
        height: d.height,
        width: d.width,
    };
    collate_frames(&clip, d.first_frame, &idx, p, s, norm, out)?;
    Ok(span_of(&idx))
}

#[cfg(not(feature = "video"))]
fn decode_and_collate(
    path: &Path,
    _t: u32,
    _s: u32,
    _norm: &collate::Normalize,
    _target_fps: u32,
    _choose: impl FnOnce(u32, u32, u32) -> Draw,
    _out: &mut [f32],
) -> Result<[u32; 2]> {
    Err(Error::Decode {
        path: path.to_path_buf(),
        reason: "this build has no video decoding (the `video` feature is off)".into(),
    })
}

/// Sets `row` to the multi-hot vector of `labels` (PySlowFast's `as_binary_vector`).
pub fn multi_hot(labels: &[u32], row: &mut [f32]) -> Result<()> {
    let classes = row.len();
    row.fill(0.0);
    for &l in labels {
        *row.get_mut(l as usize).ok_or_else(|| {
            Error::Data(format!(
                "label {l} is not below model.num_classes {classes}"
            ))
        })? = 1.0;
    }
    Ok(())
}

/// How many times a failing clip is replaced before the batch fails.
const MAX_REPLACEMENTS: u32 = 10;

/// Collates the batch of plan step `step` from `dataset` with the seeded training policy.
/// A clip that fails to decode is replaced by another sample (drawn from the same seed, so a
/// rerun replaces it the same way) and reported in [`Batch::failures`].
pub fn load_batch(dataset: &Dataset, plan: &Plan, step: &Step, alpha: u32) -> Result<Batch> {
    if plan.dataset_size() != dataset.len() as u64 {
        return Err(Error::InvalidArgument(format!(
            "the plan was made for {} clips but the dataset has {}",
            plan.dataset_size(),
            dataset.len()
        )));
    }
    if alpha > 0 {
        collate::check_alpha(step.num_frames, alpha)?;
    }
    let mut indices = Vec::new();
    plan.step_indices(step.step, &mut indices)?;
    let (t, s) = (step.num_frames, step.crop_size);
    let n = indices.len();
    let one = batch_len(1, t, s);
    let mut fast = vec![0f32; n * one];
    let norm = collate::normalize_of(plan);
    let config = plan.schedule().config();
    let data = &config.data;
    let rule = dataset.frame_rule();
    let classes = config.model.num_classes as usize;
    let mut labels = Vec::with_capacity(n);
    let mut targets = data.multi_label.then(|| vec![0f32; n * classes]);
    let mut failures = Vec::new();
    for (k, index) in indices.iter_mut().enumerate() {
        let mut replace = Rng::new(plan.seed() ^ 0xFA11, u64::from(step.epoch), *index);
        let mut attempt = 0;
        loop {
            let mut rng = Rng::new(plan.seed(), u64::from(step.epoch), *index);
            let choose = |frames, h, w| {
                collate::train_draw(
                    &mut rng,
                    rule,
                    true,
                    frames,
                    h,
                    w,
                    t,
                    s,
                    [step.sampling_rate_min, step.sampling_rate_max],
                    [step.jitter_min, step.jitter_max],
                    data.inv_uniform_sample,
                    data.random_flip,
                )
            };
            match dataset.collate_clip(
                *index as usize,
                t,
                s,
                &norm,
                data.target_fps,
                choose,
                &mut fast[k * one..(k + 1) * one],
            ) {
                Ok(span) => {
                    match &mut targets {
                        Some(all) => multi_hot(
                            &dataset.labels_in(*index as usize, span)?,
                            &mut all[k * classes..(k + 1) * classes],
                        )?,
                        None => labels.push(i64::from(dataset.label(*index as usize)?)),
                    }
                    break;
                }
                Err(e) => {
                    failures.push(format!("clip {index}: {e}"));
                    attempt += 1;
                    if attempt > MAX_REPLACEMENTS {
                        return Err(Error::Data(format!(
                            "step {}: {} clips in a row failed, last: {e}",
                            step.step, attempt
                        )));
                    }
                    let last = dataset.len() as u64 - 1;
                    *index = match u32::try_from(last) {
                        Ok(last) => u64::from(replace.int_inclusive(0, last)),
                        Err(_) => replace.next_u64() % (last + 1),
                    };
                }
            }
        }
    }
    let slow = if alpha > 0 {
        let ts = collate::slow_indices(t, alpha).len() as u32;
        let mut slow = vec![0f32; batch_len(n, ts, s)];
        collate::pack_slow(&fast, n, t, s, alpha, &mut slow)?;
        Some(slow)
    } else {
        None
    };
    Ok(Batch {
        step: step.step,
        num_frames: t,
        crop_size: s,
        indices,
        labels,
        targets,
        slow,
        fast,
        failures,
    })
}
