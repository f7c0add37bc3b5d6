//! Collation parameters and clip shapes through mg_collate_explicit and mg_collate_step
//! (src/ffi/collate.rs).
//!
//! The harness keeps the C contract itself: every non-NULL frames buffer really holds
//! num_frames * height * width * 3 bytes and every output buffer the length it is passed with.
//! A clip too large to allocate cheaply (or whose size overflows) is passed with frames NULL,
//! which the library must reject. Sizes are capped so one input costs well under a millisecond.
//!
//! Input: byte 0 even: explicit parameters; odd: a plan step (a tiny config from the input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use multigrid::ffi::{self, mg_clip, mg_clip_params};
use multigrid_fuzz::{check, single_thread, Handles, Reader, TinyConfig};

/// Largest frames buffer of one clip (bytes).
const MAX_CLIP_BYTES: usize = 64 << 10;
/// Largest output (floats, slow and fast together).
const MAX_OUT: usize = 1 << 18;
const MAX_CLIPS: usize = 4;

/// Frames for one clip: a pattern from the input, cheap to make at any size.
fn fill(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed))
        .collect()
}

/// A clip's frames: allocated when small, else None (passed as NULL).
fn frames_for(num_frames: u32, height: u32, width: u32, seed: u8) -> Option<Vec<u8>> {
    let len = (num_frames as usize)
        .checked_mul(height as usize)?
        .checked_mul(width as usize)?
        .checked_mul(3)?;
    (len <= MAX_CLIP_BYTES).then(|| fill(len, seed))
}

fn clip_of(buf: &Option<Vec<u8>>, num_frames: u32, height: u32, width: u32) -> mg_clip {
    mg_clip {
        frames: buf.as_ref().map_or(std::ptr::null(), |b| b.as_ptr()),
        num_frames,
        height,
        width,
    }
}

/// Whether (x / 255 - mean) / std is finite for every x in 0..=255, so the NaN sentinels
/// below must all be overwritten on success.
fn finite_norm(mean: &[f32; 3], std: &[f32; 3]) -> bool {
    (0..3).all(|c| {
        let scale = 1.0 / (255.0 * std[c]);
        let bias = -mean[c] / std[c];
        scale.is_finite() && bias.is_finite() && scale.abs() * 255.0 + bias.abs() < 1e30
    })
}

fn assert_written(what: &str, out: &[f32]) {
    if let Some(i) = out.iter().position(|v| v.is_nan()) {
        panic!(
            "{what}: success, but value {i} of {} was not written",
            out.len()
        );
    }
}

/// The output length for a required length `need`: mostly exact, sometimes off by a little.
fn out_len(r: &mut Reader, need: usize) -> usize {
    match r.u8() {
        250 => need + 1,
        251 => need.saturating_sub(1),
        252 => 0,
        253 => need.saturating_mul(2),
        _ => need,
    }
}

fn explicit(r: &mut Reader) {
    let num_clips = usize::from(r.u8()) % (MAX_CLIPS + 1);
    let t = r.small_or_any(16);
    let s = r.small_or_any(32);
    let mut mean = [0.45f32; 3];
    let mut std = [0.225f32; 3];
    for c in 0..3 {
        if r.u8() == 255 {
            mean[c] = r.f32();
        }
        if r.u8() == 255 {
            std[c] = r.f32();
        }
    }
    // Rarely, NULL pointers: bit 1 clips, 2 params, 4 mean, 8 std, 16 out.
    let nulls = match r.u8() {
        b if b >= 0xE0 => b & 0x1F,
        _ => 0,
    };
    let mut buffers = Vec::with_capacity(num_clips);
    let mut clips = Vec::with_capacity(num_clips);
    let mut params = Vec::with_capacity(num_clips);
    for _ in 0..num_clips {
        let (nf, h, w) = (r.small_or_any(12), r.small_or_any(20), r.small_or_any(20));
        let seed = r.u8();
        let buf = frames_for(nf, h, w, seed);
        clips.push(clip_of(&buf, nf, h, w));
        buffers.push(buf);
        params.push(mg_clip_params {
            start_frame: r.small_or_any(16),
            stride: r.small_or_any(8),
            short_side: r.small_or_any(64),
            crop_x: r.small_or_any(32),
            crop_y: r.small_or_any(32),
            flip: r.bool(),
        });
    }
    let need = (num_clips as u128) * 3 * u128::from(t) * u128::from(s) * u128::from(s);
    let Ok(need) = usize::try_from(need) else {
        return;
    };
    let len = out_len(r, need);
    if len > MAX_OUT {
        // Cannot allocate it cheaply and must not lie about its length: not tested here.
        return;
    }
    let mut out = vec![f32::NAN; len];
    let ptr = |bit: u8, p: *const u8| {
        if nulls & bit != 0 {
            std::ptr::null()
        } else {
            p
        }
    };
    let status = check(
        "mg_collate_explicit",
        ffi::mg_collate_explicit(
            ptr(1, clips.as_ptr().cast()).cast(),
            ptr(2, params.as_ptr().cast()).cast(),
            num_clips,
            t,
            s,
            ptr(4, mean.as_ptr().cast()).cast(),
            ptr(8, std.as_ptr().cast()).cast(),
            if nulls & 16 != 0 {
                std::ptr::null_mut()
            } else {
                out.as_mut_ptr()
            },
            len,
        ),
    );
    if status == ffi::MG_STATUS_OK {
        assert_eq!(len, need, "a wrong out_len was accepted");
        assert!(
            buffers.iter().all(Option::is_some),
            "a NULL frames buffer was accepted"
        );
        if finite_norm(&mean, &std) {
            assert_written("mg_collate_explicit", &out);
        }
    }
}

fn step(r: &mut Reader) {
    let cfg = TinyConfig::read(r);
    let dataset_size = 1 + u64::from(r.u16() % 256);
    let world = 1 + u32::from(r.u8() % 4);
    let rank = u32::from(r.u8()) % world;
    let seed = r.u64();
    let Some(h) = Handles::new(&cfg.json(), dataset_size, world, rank, seed) else {
        return;
    };
    let total = h.total_steps();
    let step = match r.u8() {
        255 => total + u64::from(r.u8()),
        _ => r.u64() % total,
    };
    let alpha = u32::from(r.u8() % 5);
    let (mut slow_len, mut fast_len) = (0usize, 0usize);
    let st = h.step(step);
    let lens = check(
        "mg_collate_step_len",
        ffi::mg_collate_step_len(h.plan, step, alpha, &mut slow_len, &mut fast_len),
    );
    let Some(st) = st else {
        assert_ne!(lens, ffi::MG_STATUS_OK);
        return;
    };
    if slow_len + fast_len > MAX_OUT {
        return;
    }
    // Up to four clip shapes, repeated over the batch.
    let shapes: Vec<(u32, u32, u32, u8)> = (0..1 + r.u8() % 4)
        .map(|_| {
            let nf = r.small_or_any(12).max(1);
            let (hh, ww) = (r.small_or_any(24).max(1), r.small_or_any(24).max(1));
            (nf, hh, ww, r.u8())
        })
        .collect();
    let num_clips = match r.u8() {
        255 => st.batch_size as usize + 1,
        254 => (st.batch_size as usize).saturating_sub(1),
        _ => st.batch_size as usize,
    };
    let buffers: Vec<_> = (0..num_clips)
        .map(|i| {
            let (nf, hh, ww, sd) = shapes[i % shapes.len()];
            (frames_for(nf, hh, ww, sd), nf, hh, ww)
        })
        .collect();
    let clips: Vec<mg_clip> = buffers
        .iter()
        .map(|(b, nf, hh, ww)| clip_of(b, *nf, *hh, *ww))
        .collect();
    let fast_n = out_len(r, fast_len);
    let slow_n = if alpha == 0 { 0 } else { out_len(r, slow_len) };
    if slow_n + fast_n > MAX_OUT {
        return;
    }
    let mut fast = vec![f32::NAN; fast_n];
    let mut slow = vec![f32::NAN; slow_n];
    let slow_ptr = if alpha == 0 {
        std::ptr::null_mut()
    } else {
        slow.as_mut_ptr()
    };
    let status = check(
        "mg_collate_step",
        ffi::mg_collate_step(
            h.plan,
            step,
            clips.as_ptr(),
            clips.len(),
            alpha,
            slow_ptr,
            slow_n,
            fast.as_mut_ptr(),
            fast_n,
        ),
    );
    if status == ffi::MG_STATUS_OK {
        assert_eq!(
            num_clips, st.batch_size as usize,
            "a wrong clip count was accepted"
        );
        assert_eq!(
            (fast_n, slow_n),
            (fast_len, slow_len),
            "wrong lengths were accepted"
        );
        if finite_norm(&[cfg.mean; 3], &[cfg.std; 3]) {
            assert_written("mg_collate_step fast", &fast);
            assert_written("mg_collate_step slow", &slow);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    single_thread();
    let mut r = Reader::new(data);
    if r.u8() & 1 == 0 {
        explicit(&mut r);
    } else {
        step(&mut r);
    }
});
