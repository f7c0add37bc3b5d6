//! Collation straight into libtorch tensors, in pinned memory when CUDA is present so that the
//! host-to-device copy can be asynchronous (`to_device_(.., non_blocking = true)`).

use tch::{Device, Kind, Tensor};

use super::{batch_len, collate_explicit, pack_slow, slow_indices, Clip, ClipParams, Normalize};
use crate::error::{Error, Result};

/// An uninitialised f32 CPU tensor, pinned when CUDA is available.
pub fn empty_host(shape: &[i64]) -> Result<Tensor> {
    let t = Tensor::f_empty(shape, (Kind::Float, Device::Cpu))?;
    if tch::Cuda::is_available() {
        Ok(t.f_pin_memory(Device::Cuda(0))?)
    } else {
        Ok(t)
    }
}

fn as_mut_slice(t: &mut Tensor) -> Result<&mut [f32]> {
    if t.kind() != Kind::Float || t.device() != Device::Cpu || !t.is_contiguous() {
        return Err(Error::InvalidArgument(
            "collation needs a contiguous f32 CPU tensor".into(),
        ));
    }
    let n = t.numel();
    // SAFETY: a contiguous f32 CPU tensor of n elements owns n floats at data_ptr, and the
    // &mut borrow of the tensor keeps any other Rust access away while the slice lives.
    Ok(unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, n) })
}

/// The fast pathway [N, 3, T, S, S] and, with `alpha` > 0, the slow one [N, 3, T/alpha, S, S].
pub fn collate_slowfast(
    clips: &[Clip],
    params: &[ClipParams],
    num_frames: u32,
    crop_size: u32,
    alpha: u32,
    norm: &Normalize,
) -> Result<(Option<Tensor>, Tensor)> {
    let n = clips.len();
    let (t, s) = (num_frames as i64, crop_size as i64);
    let mut fast = empty_host(&[n as i64, 3, t, s, s])?;
    debug_assert_eq!(fast.numel(), batch_len(n, num_frames, crop_size));
    collate_explicit(
        clips,
        params,
        num_frames,
        crop_size,
        norm,
        as_mut_slice(&mut fast)?,
    )?;
    if alpha == 0 {
        return Ok((None, fast));
    }
    let ts = slow_indices(num_frames, alpha).len() as i64;
    let mut slow = empty_host(&[n as i64, 3, ts, s, s])?;
    {
        let fast_ref: &[f32] = {
            let ptr = fast.data_ptr() as *const f32;
            // SAFETY: `fast` is a contiguous f32 CPU tensor that nothing writes meanwhile.
            unsafe { std::slice::from_raw_parts(ptr, fast.numel()) }
        };
        pack_slow(
            fast_ref,
            n,
            num_frames,
            crop_size,
            alpha,
            as_mut_slice(&mut slow)?,
        )?;
    }
    Ok((Some(slow), fast))
}
