//! C API of batch collation.

use super::error::{guard, mg_status, non_null, out_ptr, FfiError};
use super::plan::mg_plan;
use crate::collate::{self, Clip, ClipParams, Normalize};

/// One decoded clip: `num_frames` frames of `height` x `width` RGB bytes, row-major, frames
/// back to back (`num_frames * height * width * 3` bytes). The library only reads it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mg_clip {
    pub frames: *const u8,
    pub num_frames: u32,
    pub height: u32,
    pub width: u32,
}

/// Where one batch entry comes from. Frames: trunc(linspace(start_frame, start_frame +
/// T*stride - 1, T)) clamped to the clip. Space: resize so the short side is `short_side`
/// (long side floor(long * short_side / short)), take the S x S crop at (`crop_x`, `crop_y`)
/// of the resized frame, mirror it when `flip`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct mg_clip_params {
    pub start_frame: u32,
    pub stride: u32,
    pub short_side: u32,
    pub crop_x: u32,
    pub crop_y: u32,
    pub flip: bool,
}

fn clips_from<'a>(clips: *const mg_clip, n: usize) -> Result<Vec<Clip<'a>>, FfiError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if clips.is_null() {
        return Err(FfiError::Null("clips"));
    }
    let max = crate::schedule::config::limits::MAX_BATCH;
    if n as u64 > max {
        return Err(FfiError::Invalid(format!(
            "num_clips {n} is above the limit of {max} clips a batch"
        )));
    }
    // SAFETY: the caller promises `clips` holds `n` entries.
    let raw = unsafe { std::slice::from_raw_parts(clips, n) };
    raw.iter()
        .enumerate()
        .map(|(i, c)| {
            let len = collate::clip_bytes(c.num_frames, c.height, c.width)
                .filter(|&n| n <= isize::MAX as usize)
                .ok_or_else(|| {
                    FfiError::Invalid(format!(
                        "clip {i}: {} frames of {}x{}x3 bytes is more than memory holds",
                        c.num_frames, c.height, c.width
                    ))
                })?;
            if c.frames.is_null() {
                if len == 0 {
                    return Ok(Clip {
                        frames: &[],
                        num_frames: c.num_frames,
                        height: c.height,
                        width: c.width,
                    });
                }
                return Err(FfiError::Invalid(format!("clip {i}: frames is NULL")));
            }
            Ok(Clip {
                // SAFETY: the caller promises `frames` holds num_frames*height*width*3 bytes.
                frames: unsafe { std::slice::from_raw_parts(c.frames, len) },
                num_frames: c.num_frames,
                height: c.height,
                width: c.width,
            })
        })
        .collect()
}

fn out_slice<'a>(p: *mut f32, len: usize, name: &'static str) -> Result<&'a mut [f32], FfiError> {
    if p.is_null() {
        return Err(FfiError::Null(name));
    }
    if len > isize::MAX as usize / std::mem::size_of::<f32>() {
        return Err(FfiError::Invalid(format!(
            "`{name}` length {len} floats is more than memory holds"
        )));
    }
    // SAFETY: the caller promises `p` holds `len` floats.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// Writes the default normalisation, PySlowFast's DATA.MEAN and DATA.STD (the config's
/// `data.mean` and `data.std` defaults), into `mean[3]` and `std[3]`: the one source the
/// bindings' defaults come from.
#[no_mangle]
pub extern "C" fn mg_default_normalization(mean: *mut f32, std: *mut f32) -> mg_status {
    guard("mg_default_normalization", || {
        let mean = out_slice(mean, 3, "mean")?;
        let std = out_slice(std, 3, "std")?;
        mean.copy_from_slice(&crate::schedule::config::DEFAULT_MEAN);
        std.copy_from_slice(&crate::schedule::config::DEFAULT_STD);
        Ok(())
    })
}

/// Collates `num_clips` clips with explicit parameters into `out`, f32 [N, 3, T, S, S]
/// (N = num_clips, T = num_frames, S = crop_size), normalised as (x / 255 - mean) / std.
/// `out_len` counts floats and must equal N*3*T*S*S. Everything is checked before anything is
/// written: an empty clip, a crop outside the resized frame, a short side below the crop, a
/// zero or NaN std or a wrong `out_len` give MG_STATUS_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn mg_collate_explicit(
    clips: *const mg_clip,
    params: *const mg_clip_params,
    num_clips: usize,
    num_frames: u32,
    crop_size: u32,
    mean: *const f32,
    std: *const f32,
    out: *mut f32,
    out_len: usize,
) -> mg_status {
    guard("mg_collate_explicit", || {
        let clips = clips_from(clips, num_clips)?;
        let params: Vec<ClipParams> = if num_clips == 0 {
            Vec::new()
        } else {
            non_null(params, "params")?;
            // SAFETY: the caller promises `params` holds `num_clips` entries.
            unsafe { std::slice::from_raw_parts(params, num_clips) }
                .iter()
                .map(|p| ClipParams {
                    start_frame: p.start_frame,
                    stride: p.stride,
                    short_side: p.short_side,
                    crop_x: p.crop_x,
                    crop_y: p.crop_y,
                    flip: p.flip,
                })
                .collect()
        };
        non_null(mean, "mean")?;
        non_null(std, "std")?;
        // SAFETY: the caller promises three floats each.
        let norm = Normalize {
            mean: unsafe { *mean.cast::<[f32; 3]>() },
            std: unsafe { *std.cast::<[f32; 3]>() },
            reverse_channels: false,
        };
        let out = out_slice(out, out_len, "out")?;
        collate::collate_explicit(&clips, &params, num_frames, crop_size, &norm, out)?;
        Ok(())
    })
}

/// Floats needed for the slow and fast pathway buffers of plan step `step` (slow is 0 when
/// `alpha` is 0, i.e. a single pathway). Errors: MG_STATUS_NULL_ARGUMENT,
/// MG_STATUS_OUT_OF_RANGE (step past the plan), MG_STATUS_INVALID_ARGUMENT (alpha above the
/// step's frames).
#[no_mangle]
pub extern "C" fn mg_collate_step_len(
    plan: *const mg_plan,
    step: u64,
    alpha: u32,
    slow_len: *mut usize,
    fast_len: *mut usize,
) -> mg_status {
    guard("mg_collate_step_len", || {
        let p = non_null(plan, "plan")?;
        let slow_len = out_ptr(slow_len, "slow_len")?;
        let fast_len = out_ptr(fast_len, "fast_len")?;
        (*slow_len, *fast_len) = collate::step_lens(&p.inner, step, alpha)?;
        Ok(())
    })
}

/// Collates the batch of plan step `step` with the seeded training policy: stride, start,
/// scale jitter, crop and flip drawn from the step's ranges, deterministic from (plan seed,
/// epoch, dataset index). `clips` are the step's clips in the order of mg_plan_step_indices
/// (`num_clips` must equal the step's batch size). Writes the fast pathway [N, 3, T, S, S] to
/// `fast` and, when `alpha` > 0, the slow pathway [N, 3, T/alpha, S, S] to `slow` (NULL when
/// `alpha` is 0). Lengths count floats; mg_collate_step_len gives them. Everything is checked
/// before anything is written. Errors: MG_STATUS_NULL_ARGUMENT, MG_STATUS_OUT_OF_RANGE (step
/// past the plan), MG_STATUS_INVALID_ARGUMENT (clip count, clip contents, buffer lengths, slow
/// given with alpha 0 or missing with alpha > 0, alpha above the step's frames).
#[no_mangle]
pub extern "C" fn mg_collate_step(
    plan: *const mg_plan,
    step: u64,
    clips: *const mg_clip,
    num_clips: usize,
    alpha: u32,
    slow: *mut f32,
    slow_len: usize,
    fast: *mut f32,
    fast_len: usize,
) -> mg_status {
    guard("mg_collate_step", || {
        let p = &non_null(plan, "plan")?.inner;
        let clips = clips_from(clips, num_clips)?;
        let fast = out_slice(fast, fast_len, "fast")?;
        let slow = if slow.is_null() && slow_len == 0 {
            None
        } else {
            Some(out_slice(slow, slow_len, "slow")?)
        };
        collate::collate_step(p, step, &clips, alpha, slow, fast)?;
        Ok(())
    })
}

/// Sets the number of collation threads (0: one per core) for later calls.
#[no_mangle]
pub extern "C" fn mg_collate_set_num_threads(num_threads: usize) -> mg_status {
    guard("mg_collate_set_num_threads", || {
        collate::set_num_threads(num_threads)?;
        Ok(())
    })
}
