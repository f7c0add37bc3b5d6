//! A dataset is a list of labelled clips: PySlowFast's `path label` CSV files of videos, or a
//! clip store. [`load_batch`] turns a plan step into its collated batch, replacing clips that
//! fail to decode (through the one batch assembler, [`super::assemble`]).

use std::path::{Path, PathBuf};

use crate::collate::{
    self, batch_len, temporal_indices_scaled, Clip, ClipParams, Draw, FrameRule, Rng,
};
use crate::error::{Error, Result};
use crate::plan::{Plan, Step};

use super::assemble::{pack, Assembly, ClipsLoaded, Failures, Labels};
use super::frame_list::FrameLists;
use super::frame_store::FrameStore;
use super::store::ClipStore;

/// Where clips come from.
pub enum Dataset {
    /// Videos listed as `path label` lines (paths relative to the list's directory).
    VideoList {
        list: PathBuf,
        entries: Vec<(PathBuf, u32)>,
    },
    /// Decoded frames, memory-mapped (`.mgstore`).
    Store(ClipStore),
    /// Frames compressed one by one (`.mgframes`): a clip costs the frames it samples.
    Frames(FrameStore),
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
            Dataset::Frames(s) => write!(f, "Frames({}, {} clips)", s.path().display(), s.len()),
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

    /// Opens a clip store (`.mgstore`, decoded frames) or a frame store (`.mgframes`, frames
    /// compressed one by one), whichever the file's magic says it is.
    pub fn store(path: impl AsRef<Path>) -> Result<Dataset> {
        let path = path.as_ref();
        let mut magic = [0u8; 8];
        let read = std::fs::File::open(path).and_then(|mut f| {
            use std::io::Read;
            f.read(&mut magic)
        });
        match read {
            Ok(8) if &magic == super::frame_store::MAGIC => {
                Ok(Dataset::Frames(FrameStore::open(path)?))
            }
            // A short or unreadable file gets the clip store's own error.
            _ => Ok(Dataset::Store(ClipStore::open(path)?)),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Dataset::VideoList { entries, .. } => entries.len(),
            Dataset::Store(s) => s.len(),
            Dataset::Frames(s) => s.len(),
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
            Dataset::Frames(s) => Ok(s.info(i)?.label),
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
                let clip = Clip {
                    frames,
                    num_frames: info.num_frames,
                    height: info.height,
                    width: info.width,
                };
                let pick = pick_frames(&clip, info.fps(), target_fps, t, choose);
                if pick.plain {
                    // The collator's own temporal sampling is this pick: no gather needed.
                    collate::collate_explicit(&[clip], &[pick.params], t, s, norm, out)?;
                } else {
                    collate_frames(&clip, 0, &pick.frames, pick.params, s, norm, out)?;
                }
                Ok(span_of(&pick.frames))
            }
            Dataset::Frames(store) => {
                let info = store.info(i)?;
                let shape = Clip {
                    frames: &[],
                    num_frames: info.num_frames,
                    height: info.height,
                    width: info.width,
                };
                let pick = pick_frames(&shape, info.fps(), target_fps, t, choose);
                let (p, idx) = (pick.params, pick.frames);
                // Only the sampled frames are decoded, each once, in sampling order.
                let mut gathered = Vec::new();
                store.gather(i, &idx, &mut gathered)?;
                let clip = Clip {
                    frames: &gathered,
                    num_frames: idx.len() as u32,
                    height: info.height,
                    width: info.width,
                };
                collate::collate_gathered(clip, p, s, norm, out)?;
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

/// A clip's draw and the T frames it picks.
struct Pick {
    params: ClipParams,
    frames: Vec<u32>,
    /// The pick is the collator's own temporal sampling (the clip at the target rate, no
    /// explicit frames), so a clip already in memory needs no gather.
    plain: bool,
}

/// The draw `choose` makes for a clip of `clip`'s frame count and size at `fps`, and the frames
/// it picks: the draw's explicit frames (the frame-list rules), else T frames from its start and
/// stride counted at `target_fps` (`data.target_fps`), so a 60 fps video spans as many seconds
/// as a 30 fps one. Only `clip`'s shape is read.
fn pick_frames(
    clip: &Clip,
    fps: Option<f64>,
    target_fps: u32,
    t: u32,
    choose: impl FnOnce(u32, u32, u32) -> Draw,
) -> Pick {
    let scale = collate::fps_scale(fps, target_fps);
    let d = choose(
        collate::frames_at_scale(clip.num_frames, scale),
        clip.height,
        clip.width,
    );
    let p = d.params;
    let plain = scale == 1.0 && d.frames.is_none();
    let frames = d.frames.unwrap_or_else(|| {
        temporal_indices_scaled(p.start_frame, p.stride, t, clip.num_frames, scale)
    });
    Pick {
        params: p,
        frames,
        plain,
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
    let shape = Clip {
        frames: &[],
        num_frames: info.num_frames,
        height: info.height,
        width: info.width,
    };
    let pick = pick_frames(&shape, Some(info.fps), target_fps, t, choose);
    let (p, idx) = (pick.params, pick.frames);
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

/// A plan step's batch before its clips are loaded: the step's dataset indices and its shape.
/// [`load_batch`] loads it on the calling thread; the [`Loader`](super::Loader) hands its clip
/// ranges to several workers ([`load_clips`]) and packs it with [`finish_batch`].
#[derive(Debug, Clone)]
pub struct BatchSpec {
    pub step: Step,
    pub indices: Vec<u64>,
    pub alpha: u32,
    /// Values of one clip's fast pathway: 3 x T x S x S.
    pub clip_len: usize,
    /// `model.num_classes` of a multi-label task (`data.multi_label`); None for one class per
    /// clip.
    pub classes: Option<usize>,
}

/// Checks `step` against `dataset` and `alpha` and lists its clips.
pub fn batch_spec(dataset: &Dataset, plan: &Plan, step: &Step, alpha: u32) -> Result<BatchSpec> {
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
    let config = plan.schedule().config();
    Ok(BatchSpec {
        step: step.clone(),
        indices,
        alpha,
        clip_len: batch_len(1, step.num_frames, step.crop_size),
        classes: config
            .data
            .multi_label
            .then_some(config.model.num_classes as usize),
    })
}

impl BatchSpec {
    fn labels(&self) -> Labels {
        self.classes
            .map_or(Labels::Classes, |classes| Labels::MultiHot { classes })
    }
}

/// Collates clips `range` of `spec` into `fast` (their [range.len(), 3, T, S, S] values) with
/// the seeded training policy. A clip that fails to decode is replaced by another sample (drawn
/// from the same seed, so a rerun replaces it the same way) and reported in the failures.
pub fn load_clips(
    dataset: &Dataset,
    plan: &Plan,
    spec: &BatchSpec,
    range: std::ops::Range<usize>,
    fast: &mut [f32],
) -> Result<ClipsLoaded> {
    let step = &spec.step;
    let one = spec.clip_len;
    let indices = spec.indices.get(range.clone()).ok_or_else(|| {
        Error::Internal(format!(
            "clips {range:?} of a batch of {}",
            spec.indices.len()
        ))
    })?;
    if fast.len() != indices.len() * one {
        return Err(Error::Internal(format!(
            "{} values for {} clips of {one}",
            fast.len(),
            indices.len()
        )));
    }
    let (t, s) = (step.num_frames, step.crop_size);
    let data = &plan.schedule().config().data;
    let rule = dataset.frame_rule();
    let epoch = u64::from(step.epoch);
    let draw = |index, frames, height, width| {
        collate::train_draw(
            &mut Rng::new(plan.seed(), epoch, index),
            rule,
            true,
            frames,
            height,
            width,
            t,
            s,
            [step.sampling_rate_min, step.sampling_rate_max],
            [step.jitter_min, step.jitter_max],
            data.inv_uniform_sample,
            data.random_flip,
        )
    };
    let replace = Failures::Replace {
        max: MAX_REPLACEMENTS,
        seed: plan.seed(),
        epoch,
    };
    Assembly::new(dataset, plan, [t, s], spec.alpha, &draw)
        .labels(spec.labels())
        .failures(replace, format!("step {}", step.step))
        .fill(&mut indices.iter().copied(), fast)
}

/// The batch of `spec` whose clips were all loaded into `fast` (`loaded` in clip order): packs
/// the slow pathway when `spec.alpha` > 0.
pub fn finish_batch(spec: BatchSpec, fast: Vec<f32>, loaded: ClipsLoaded) -> Result<Batch> {
    let step = &spec.step;
    let shape = [step.num_frames, step.crop_size];
    pack(step.step, shape, spec.alpha, spec.labels(), fast, loaded)
}

/// Collates the batch of plan step `step` from `dataset` on the calling thread ([`load_clips`]
/// over all its clips).
pub fn load_batch(dataset: &Dataset, plan: &Plan, step: &Step, alpha: u32) -> Result<Batch> {
    let spec = batch_spec(dataset, plan, step, alpha)?;
    let n = spec.indices.len();
    let mut fast = vec![0f32; n * spec.clip_len];
    let loaded = load_clips(dataset, plan, &spec, 0..n, &mut fast)?;
    finish_batch(spec, fast, loaded)
}
