//! Variable-shape batch collation: decoded clips (u8 RGB, [frames][height][width][3], any size
//! per clip) to exactly the batch shape a plan step asks for, f32 [N, 3, T, S, S] (NCTHW), plus
//! the SlowFast slow pathway. Pure CPU, part of the no-libtorch build.
//!
//! One fused pass per (clip, frame): the frame is gathered, resized bilinearly (PyTorch's
//! align_corners=False rule) only inside the crop window, flipped and normalised as it is
//! written. Clips and frames run in parallel on a pool whose size is configurable.

mod kernel;
pub mod sampling;
#[cfg(feature = "torch")]
pub mod tensor;

use std::sync::Arc;

use parking_lot::Mutex;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::plan::{Plan, Step};
pub use sampling::{
    charades_indices, charades_random_start, charades_view_start, eval_draw, eval_params,
    fps_scale, frame_list_test_views, frames_at_scale, resized_size, segment_indices, slow_indices,
    temporal_indices, temporal_indices_scaled, test_views, train_draw, train_params, Draw,
    FrameRule, Rng, ViewMode,
};

/// One decoded clip: `frames` holds `num_frames * height * width * 3` bytes, RGB, row-major.
#[derive(Debug, Clone, Copy)]
pub struct Clip<'a> {
    pub frames: &'a [u8],
    pub num_frames: u32,
    pub height: u32,
    pub width: u32,
}

/// Where one batch entry comes from in its clip. Frames are trunc(linspace(start_frame,
/// start_frame + T*stride - 1, T)) clamped to the clip; the frame is resized so its short side
/// is `short_side` (long side floor(long * short_side / short)); the S x S crop starts at
/// (`crop_x`, `crop_y`) in the resized frame and is mirrored when `flip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClipParams {
    pub start_frame: u32,
    pub stride: u32,
    pub short_side: u32,
    pub crop_x: u32,
    pub crop_y: u32,
    pub flip: bool,
}

/// Per-channel normalisation: (x / 255 - mean) / std.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Channels written in reverse order after normalising (RGB in, BGR out), as PySlowFast's
    /// DATA.REVERSE_INPUT_CHANNEL: mean[c] and std[c] still apply to source channel c.
    pub reverse_channels: bool,
}

impl Normalize {
    /// What this normalisation means for frames that PySlowFast decodes as BGR, applied to the
    /// same frames decoded as RGB. PySlowFast reads Charades' and SSv2's JPEG frames with cv2
    /// (BGR), normalises decoded channel c with mean[c] and std[c], and DATA.REVERSE_INPUT_CHANNEL
    /// then reverses the channels, so the network sees RGB with the flag and BGR without it; its
    /// Kinetics videos decode as RGB (PyAV), so there the flag gives BGR, as `self` does on RGB
    /// pixels. The result feeds the network PySlowFast's channel order, with each decoded
    /// channel normalised by PySlowFast's mean and std for it.
    pub fn for_bgr_decoder(self) -> Normalize {
        let reversed = |a: [f32; 3]| [a[2], a[1], a[0]];
        Normalize {
            mean: reversed(self.mean),
            std: reversed(self.std),
            reverse_channels: !self.reverse_channels,
        }
    }
}

impl Default for Normalize {
    fn default() -> Self {
        Normalize {
            mean: crate::schedule::config::DEFAULT_MEAN,
            std: crate::schedule::config::DEFAULT_STD,
            reverse_channels: false,
        }
    }
}

impl Normalize {
    fn validate(&self) -> Result<()> {
        for c in 0..3 {
            if !self.mean[c].is_finite() {
                return Err(Error::InvalidArgument(format!(
                    "mean[{c}] is {}",
                    self.mean[c]
                )));
            }
            if !(self.std[c].is_finite() && self.std[c] != 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "std[{c}] is {}; it must be finite and non-zero",
                    self.std[c]
                )));
            }
        }
        Ok(())
    }
}

static POOL: Mutex<Option<Arc<rayon::ThreadPool>>> = Mutex::new(None);

/// Sets the collation threads; 0 means one per core. Takes effect for later calls.
pub fn set_num_threads(n: usize) -> Result<()> {
    let max = crate::schedule::config::limits::MAX_THREADS;
    if n > max {
        return Err(Error::InvalidArgument(format!(
            "{n} collation threads is above the limit of {max}"
        )));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("mg-collate-{i}"))
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start {n} collation threads: {e}")))?;
    *POOL.lock() = Some(Arc::new(pool));
    Ok(())
}

fn pool() -> Result<Arc<rayon::ThreadPool>> {
    let mut guard = POOL.lock();
    if let Some(p) = guard.as_ref() {
        return Ok(p.clone());
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("mg-collate-{i}"))
            .build()
            .map_err(|e| Error::InvalidArgument(format!("cannot start collation threads: {e}")))?,
    );
    *guard = Some(p.clone());
    Ok(p)
}

/// Floats in a batch of `n` clips of `t` frames at `s` x `s`, for shapes within the config's
/// limits; caller-supplied shapes go through [`batch_len_checked`].
pub fn batch_len(n: usize, t: u32, s: u32) -> usize {
    checked_batch_len(n, t, s).unwrap_or(usize::MAX)
}

fn checked_batch_len(n: usize, t: u32, s: u32) -> Option<usize> {
    n.checked_mul(3)?
        .checked_mul(t as usize)?
        .checked_mul(s as usize)?
        .checked_mul(s as usize)
}

/// Bytes of a clip of `t` frames of `h` x `w` RGB; None when the count overflows.
pub fn clip_bytes(t: u32, h: u32, w: u32) -> Option<usize> {
    (t as usize)
        .checked_mul(h as usize)?
        .checked_mul(w as usize)?
        .checked_mul(3)
}

/// [`batch_len`] as an error naming the shape when it overflows.
pub fn batch_len_checked(n: usize, t: u32, s: u32) -> Result<usize> {
    checked_batch_len(n, t, s).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "a batch of {n} clips x 3 x {t} x {s} x {s} has more floats than memory holds"
        ))
    })
}

/// A batch shape within the config's limits (which also keeps every size derived from it in
/// range).
fn check_shape(n: usize, t: u32, s: u32) -> Result<()> {
    use crate::schedule::config::limits::{MAX_BATCH, MAX_CROP, MAX_FRAMES};
    if t == 0 || s == 0 || t > MAX_FRAMES || s > MAX_CROP || n as u64 > MAX_BATCH {
        return Err(Error::InvalidArgument(format!(
            "a batch of {n} clips of {t} frames at {s}x{s}: frames must be in 1..={MAX_FRAMES}, \
             the crop in 1..={MAX_CROP} and the clips at most {MAX_BATCH}"
        )));
    }
    Ok(())
}

fn check_clip(i: usize, clip: &Clip, p: &ClipParams, s: u32) -> Result<()> {
    let bad = |msg: String| Err(Error::InvalidArgument(format!("clip {i}: {msg}")));
    if clip.num_frames == 0 || clip.height == 0 || clip.width == 0 {
        return bad(format!(
            "empty clip ({} frames of {}x{})",
            clip.num_frames, clip.height, clip.width
        ));
    }
    let need = clip_bytes(clip.num_frames, clip.height, clip.width).unwrap_or(usize::MAX);
    if clip.frames.len() < need {
        return bad(format!(
            "{} bytes of frames, {} frames of {}x{}x3 need {need}",
            clip.frames.len(),
            clip.num_frames,
            clip.height,
            clip.width
        ));
    }
    if p.stride == 0 {
        return bad("stride is 0".into());
    }
    if p.start_frame >= clip.num_frames {
        return bad(format!(
            "start_frame {} is past the clip's {} frames",
            p.start_frame, clip.num_frames
        ));
    }
    if p.short_side < s {
        return bad(format!(
            "short_side {} is smaller than the crop {s}",
            p.short_side
        ));
    }
    let (rh, rw) = resized_size(clip.height, clip.width, p.short_side);
    if u64::from(p.crop_x) + u64::from(s) > u64::from(rw)
        || u64::from(p.crop_y) + u64::from(s) > u64::from(rh)
    {
        return bad(format!(
            "crop {s}x{s} at ({}, {}) is outside the resized {rw}x{rh} frame",
            p.crop_x, p.crop_y
        ));
    }
    Ok(())
}

/// Collates the T frames a caller already gathered in sampling order (`clip.num_frames` = T)
/// with `p`'s spatial window: the collator's own temporal sampling over them is the identity,
/// so the frame indices the caller picked are kept exactly.
pub fn collate_gathered(
    clip: Clip,
    p: ClipParams,
    s: u32,
    norm: &Normalize,
    out: &mut [f32],
) -> Result<()> {
    let p = ClipParams {
        start_frame: 0,
        stride: 1,
        ..p
    };
    collate_explicit(&[clip], &[p], clip.num_frames, s, norm, out)
}

/// Collates clips with explicit parameters into `out`, f32 [N, 3, T, S, S]. Everything is
/// checked before anything is written.
pub fn collate_explicit(
    clips: &[Clip],
    params: &[ClipParams],
    num_frames: u32,
    crop_size: u32,
    norm: &Normalize,
    out: &mut [f32],
) -> Result<()> {
    if clips.len() != params.len() {
        return Err(Error::InvalidArgument(format!(
            "{} clips but {} parameter sets",
            clips.len(),
            params.len()
        )));
    }
    check_shape(clips.len(), num_frames, crop_size)?;
    norm.validate()?;
    let need = batch_len_checked(clips.len(), num_frames, crop_size)?;
    if out.len() != need {
        return Err(Error::InvalidArgument(format!(
            "output holds {} floats; {} clips x 3 x {num_frames} x {crop_size} x {crop_size} need {need}",
            out.len(),
            clips.len()
        )));
    }
    for (i, (c, p)) in clips.iter().zip(params).enumerate() {
        check_clip(i, c, p, crop_size)?;
    }
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * norm.std[c]));
    let bias: [f32; 3] = std::array::from_fn(|c| -norm.mean[c] / norm.std[c]);
    let (t, s) = (num_frames as usize, crop_size as usize);
    let plane = t * s * s;
    let clip_len = 3 * plane;
    let planes = if norm.reverse_channels {
        [2 * plane, plane, 0]
    } else {
        [0, plane, 2 * plane]
    };
    struct Prepared {
        rows: kernel::Taps,
        cols: kernel::Taps,
        frames: Vec<u32>,
    }
    let prepared: Vec<Prepared> = clips
        .iter()
        .zip(params)
        .map(|(c, p)| {
            let (rh, rw) = resized_size(c.height, c.width, p.short_side);
            Prepared {
                rows: kernel::Taps::new(
                    c.height,
                    rh,
                    p.crop_y,
                    crop_size,
                    false,
                    c.width as usize * 3,
                ),
                cols: kernel::Taps::new(c.width, rw, p.crop_x, crop_size, p.flip, 3),
                frames: temporal_indices(p.start_frame, p.stride, num_frames, c.num_frames),
            }
        })
        .collect();
    let base = SendPtr(out.as_mut_ptr());
    pool()?.install(|| {
        (0..clips.len() * t).into_par_iter().for_each(|task| {
            let (n, ti) = (task / t, task % t);
            let (clip, prep) = (&clips[n], &prepared[n]);
            let frame_len = clip.height as usize * clip.width as usize * 3;
            let f = prep.frames[ti] as usize;
            let src = &clip.frames[f * frame_len..(f + 1) * frame_len];
            let b = &base;
            // SAFETY: task (n, ti) alone writes the S*S values of frame ti in each of clip n's
            // three channel planes, all inside `out` (length checked above).
            unsafe {
                let dst = b.0.add(n * clip_len + ti * s * s);
                kernel::frame(src, &prep.rows, &prep.cols, &scale, &bias, dst, planes);
            }
        });
    });
    Ok(())
}

struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint output ranges to pool threads (see collate_explicit).
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// Copies the slow pathway out of a fast batch [N, 3, T, S, S]: frames slow_indices(T, alpha)
/// into `slow` [N, 3, T/alpha, S, S].
pub fn pack_slow(
    fast: &[f32],
    n: usize,
    t: u32,
    s: u32,
    alpha: u32,
    slow: &mut [f32],
) -> Result<()> {
    check_alpha(t, alpha)?;
    check_shape(n, t, s)?;
    let idx = slow_indices(t, alpha);
    let frame = s as usize * s as usize;
    let (need_slow, need_fast) = (
        batch_len_checked(n, idx.len() as u32, s)?,
        batch_len_checked(n, t, s)?,
    );
    if fast.len() != need_fast || slow.len() != need_slow {
        return Err(Error::InvalidArgument(format!(
            "slow buffer holds {} floats and fast {}; N={n}, T={t}, S={s}, alpha={alpha} need {need_slow} and {need_fast}",
            slow.len(),
            fast.len(),
        )));
    }
    let ts = idx.len();
    pool()?.install(|| {
        slow.par_chunks_mut(ts * frame)
            .enumerate()
            .for_each(|(nc, dst)| {
                let src = &fast[nc * t as usize * frame..(nc + 1) * t as usize * frame];
                for (k, &f) in idx.iter().enumerate() {
                    let f = f as usize;
                    dst[k * frame..(k + 1) * frame]
                        .copy_from_slice(&src[f * frame..(f + 1) * frame]);
                }
            });
    });
    Ok(())
}

/// SlowFast's alpha against the fast pathway's frames: the slow pathway takes T / alpha of
/// them, at least one.
pub fn check_alpha(t: u32, alpha: u32) -> Result<()> {
    if alpha == 0 || t < alpha {
        return Err(Error::InvalidArgument(format!(
            "alpha {alpha} must be in 1..={t} (the fast pathway's frames)"
        )));
    }
    Ok(())
}

/// Floats of the slow (0 when `alpha` is 0: one pathway) and the fast pathway buffers of plan
/// step `step`.
pub fn step_lens(plan: &Plan, step: u64, alpha: u32) -> Result<(usize, usize)> {
    let s = plan.step(step)?;
    let n = s.batch_size as usize;
    let fast = batch_len_checked(n, s.num_frames, s.crop_size)?;
    let slow = if alpha == 0 {
        0
    } else {
        check_alpha(s.num_frames, alpha)?;
        let ts = slow_indices(s.num_frames, alpha).len() as u32;
        batch_len_checked(n, ts, s.crop_size)?
    };
    Ok((slow, fast))
}

/// Collates the batch of plan step `step` with the seeded training policy (see
/// [`step_params`]): the fast pathway into `fast` and, when `alpha` > 0, the slow pathway into
/// `slow`. Every argument, both buffers included, is checked before anything is written.
pub fn collate_step(
    plan: &Plan,
    step: u64,
    clips: &[Clip],
    alpha: u32,
    slow: Option<&mut [f32]>,
    fast: &mut [f32],
) -> Result<()> {
    let s = plan.step(step)?;
    let (need_slow, need_fast) = step_lens(plan, step, alpha)?;
    match (&slow, alpha) {
        (None, 0) => {}
        (Some(_), 0) => {
            return Err(Error::InvalidArgument(
                "alpha is 0 (one pathway) but a slow buffer is given".into(),
            ))
        }
        (None, _) => {
            return Err(Error::InvalidArgument(format!(
                "alpha is {alpha} but no slow buffer is given; step {step} needs {need_slow} floats"
            )))
        }
        (Some(b), _) if b.len() != need_slow => {
            return Err(Error::InvalidArgument(format!(
                "slow holds {} floats; step {step} needs {need_slow}",
                b.len()
            )))
        }
        (Some(_), _) => {}
    }
    if fast.len() != need_fast {
        return Err(Error::InvalidArgument(format!(
            "fast holds {} floats; step {step} needs {need_fast}",
            fast.len()
        )));
    }
    let mut indices = Vec::new();
    plan.step_indices(step, &mut indices)?;
    let params = step_params(plan, &s, &indices, clips)?;
    collate_explicit(
        clips,
        &params,
        s.num_frames,
        s.crop_size,
        &normalize_of(plan),
        fast,
    )?;
    if let Some(slow) = slow {
        pack_slow(fast, clips.len(), s.num_frames, s.crop_size, alpha, slow)?;
    }
    Ok(())
}

/// The seeded training draws for every clip of a plan step, deterministic from (seed, epoch,
/// dataset index). `clips` are in the order of [`Plan::step_indices`].
pub fn step_params(
    plan: &Plan,
    step: &Step,
    indices: &[u64],
    clips: &[Clip],
) -> Result<Vec<ClipParams>> {
    if indices.len() != clips.len() {
        return Err(Error::InvalidArgument(format!(
            "step {} has {} dataset indices but {} clips were given",
            step.step,
            indices.len(),
            clips.len()
        )));
    }
    let data = &plan.schedule().config().data;
    Ok(indices
        .iter()
        .zip(clips)
        .map(|(&index, c)| {
            let mut rng = Rng::new(plan.seed(), u64::from(step.epoch), index);
            train_params(
                &mut rng,
                c.num_frames,
                c.height,
                c.width,
                step.num_frames,
                step.crop_size,
                [step.sampling_rate_min, step.sampling_rate_max],
                [step.jitter_min, step.jitter_max],
                data.inv_uniform_sample,
                data.random_flip,
            )
        })
        .collect())
}

/// The config's normalisation.
pub fn normalize_of(plan: &Plan) -> Normalize {
    let d = &plan.schedule().config().data;
    Normalize {
        mean: d.mean,
        std: d.std,
        reverse_channels: d.reverse_input_channel,
    }
}
