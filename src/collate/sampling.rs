//! Which frames and which window of a clip a batch entry takes: PySlowFast's temporal and
//! spatial sampling rules, and the seeded random policy that draws them.

use crate::schedule::config::round_half_even;

/// torch.linspace in float32 (its default dtype), with its symmetric evaluation: the first
/// half counts up from `start`, the second half down from `end`. Truncating these values is
/// how PySlowFast picks frames, so the float32 rounding decides which frame is taken.
pub fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    match steps {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (steps - 1) as f32;
            let half = steps / 2;
            (0..steps)
                .map(|i| {
                    if i < half {
                        start + step * i as f32
                    } else {
                        end - step * (steps - 1 - i) as f32
                    }
                })
                .collect()
        }
    }
}

/// Frame indices of a clip: trunc(linspace(start, start + T*stride - 1, T)) clamped to
/// [0, num_frames - 1] (PySlowFast's `temporal_sampling`).
pub fn temporal_indices(start: u32, stride: u32, t: u32, num_frames: u32) -> Vec<u32> {
    // In u64: a caller's explicit stride times T can pass u32.
    let end = start as f32 + (u64::from(t) * u64::from(stride)) as f32 - 1.0;
    let last = num_frames.saturating_sub(1) as f32;
    linspace_f32(start as f32, end, t as usize)
        .into_iter()
        .map(|v| v.clamp(0.0, last) as u32)
        .collect()
}

/// [`temporal_indices`] for a video at `scale` = its frame rate / `data.target_fps`: the start
/// and stride count frames at the target rate, so the clip spans T*stride*scale source frames
/// from start*scale (PySlowFast's clip_size = sampling_rate * T / target_fps * fps). A scale of
/// 1 is [`temporal_indices`] exactly.
pub fn temporal_indices_scaled(
    start: u32,
    stride: u32,
    t: u32,
    num_frames: u32,
    scale: f64,
) -> Vec<u32> {
    if scale == 1.0 {
        return temporal_indices(start, stride, t, num_frames);
    }
    let first = f64::from(start) * scale;
    let end = first + (u64::from(t) * u64::from(stride)) as f64 * scale - 1.0;
    let last = num_frames.saturating_sub(1) as f32;
    linspace_f32(first as f32, end as f32, t as usize)
        .into_iter()
        .map(|v| v.clamp(0.0, last) as u32)
        .collect()
}

/// A video's frame rate over `data.target_fps`; 1 when the rate is unknown.
pub fn fps_scale(fps: Option<f64>, target_fps: u32) -> f64 {
    match fps {
        Some(f) if f.is_finite() && f > 0.0 && target_fps > 0 => f / f64::from(target_fps),
        _ => 1.0,
    }
}

/// Frames of a clip counted at the target rate: what the sampling policies draw starts from.
pub fn frames_at_scale(num_frames: u32, scale: f64) -> u32 {
    if scale == 1.0 {
        num_frames
    } else {
        ((f64::from(num_frames) / scale).floor() as u32).max(1)
    }
}

/// Slow-pathway frames within the fast ones: trunc(linspace(0, T - 1, T / alpha)) (spec 3.1).
pub fn slow_indices(t: u32, alpha: u32) -> Vec<u32> {
    let n = (t / alpha.max(1)) as usize;
    linspace_f32(0.0, (t.max(1) - 1) as f32, n)
        .into_iter()
        .map(|v| v as u32)
        .collect()
}

/// Size of a frame whose short side is resized to `short_side`, aspect kept, the long side
/// floored as PySlowFast's `random_short_side_scale_jitter` computes it. Returns (h, w).
pub fn resized_size(height: u32, width: u32, short_side: u32) -> (u32, u32) {
    if (width <= height && width == short_side) || (height <= width && height == short_side) {
        return (height, width);
    }
    if width < height {
        let h = (f64::from(height) / f64::from(width) * f64::from(short_side)).floor();
        (h as u32, short_side)
    } else {
        let w = (f64::from(width) / f64::from(height) * f64::from(short_side)).floor();
        (short_side, w as u32)
    }
}

/// A small deterministic generator (SplitMix64): the same (seed, epoch, index) draws the same
/// augmentation on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, epoch: u64, index: u64) -> Rng {
        let mut r = Rng(seed ^ 0x6A09_E667_F3BC_C908);
        let a = r.next_u64();
        let mut r = Rng(a ^ epoch.wrapping_mul(0xBB67_AE85_84CA_A73B));
        let b = r.next_u64();
        Rng(b ^ index.wrapping_mul(0x3C6E_F372_FE94_F82B))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [lo, hi], both inclusive.
    pub fn int_inclusive(&mut self, lo: u32, hi: u32) -> u32 {
        if hi <= lo {
            return lo;
        }
        let range = u64::from(hi - lo) + 1;
        lo + ((u128::from(self.next_u64()) * u128::from(range)) >> 64) as u32
    }
}

/// Evaluation modes of the collator; training draws its parameters from a seeded [`Rng`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewMode {
    /// Centred in time, short side resized to the crop, centre crop.
    Val,
    /// View `temporal` of `num_temporal` uniformly spaced clips and crop `spatial` (0, 1, 2)
    /// along the long side, after resizing the short side to the crop.
    Test {
        temporal: u32,
        num_temporal: u32,
        spatial: u32,
    },
}

/// The training draws of one clip (spec 1.8, 1.9), from PySlowFast's ranges:
/// stride ~ U{min, max}; start ~ U{0, max(0, n - T*stride)}; short side = round(U[jmin, jmax])
/// (or 1/U[1/jmax, 1/jmin] with `inv_uniform`); crop offsets ~ U{0, side - S - 1} as numpy's
/// exclusive randint draws them; flip with p = 0.5.
#[allow(clippy::too_many_arguments)]
pub fn train_params(
    rng: &mut Rng,
    num_frames: u32,
    height: u32,
    width: u32,
    t: u32,
    crop: u32,
    stride_range: [u32; 2],
    jitter: [u32; 2],
    inv_uniform: bool,
    random_flip: bool,
) -> super::ClipParams {
    let stride = rng.int_inclusive(stride_range[0], stride_range[1]);
    let span = u64::from(t) * u64::from(stride);
    let start = rng.int_inclusive(0, u64::from(num_frames).saturating_sub(span) as u32);
    super::ClipParams {
        start_frame: start,
        stride,
        ..spatial_train(rng, height, width, crop, jitter, inv_uniform, random_flip)
    }
}

/// The spatial half of [`train_params`] (scale, crop, flip), drawn in its order.
fn spatial_train(
    rng: &mut Rng,
    height: u32,
    width: u32,
    crop: u32,
    jitter: [u32; 2],
    inv_uniform: bool,
    random_flip: bool,
) -> super::ClipParams {
    let [jmin, jmax] = [f64::from(jitter[0]), f64::from(jitter[1])];
    let short_side = if inv_uniform {
        let inv = 1.0 / jmax + rng.uniform() * (1.0 / jmin - 1.0 / jmax);
        round_half_even(1.0 / inv)
    } else {
        round_half_even(jmin + rng.uniform() * (jmax - jmin))
    } as u32;
    let short_side = short_side.max(crop);
    let (rh, rw) = resized_size(height, width, short_side);
    let crop_y = if rh > crop {
        rng.int_inclusive(0, rh - crop - 1)
    } else {
        0
    };
    let crop_x = if rw > crop {
        rng.int_inclusive(0, rw - crop - 1)
    } else {
        0
    };
    let flip = random_flip && rng.uniform() < 0.5;
    super::ClipParams {
        start_frame: 0,
        stride: 1,
        short_side,
        crop_x,
        crop_y,
        flip,
    }
}

/// PySlowFast's test views with the short side each view's frames are resized to: K clips
/// uniformly spaced in time; for C > 1 crops the short side resized to the test crop and crops
/// 0..C along the long side (C = 2: the first and the centre); for C = 1 the short side
/// resized to the smallest training jitter scale and the centre crop.
pub fn test_views(
    num_temporal: u32,
    crops: u32,
    crop: u32,
    jitter_min: u32,
) -> Vec<(ViewMode, u32)> {
    let spatial: Vec<(u32, u32)> = if crops <= 1 {
        vec![(1, jitter_min.max(crop))]
    } else {
        (0..crops.min(3)).map(|c| (c, crop)).collect()
    };
    (0..num_temporal)
        .flat_map(|k| {
            spatial.iter().map(move |&(c, short)| {
                (
                    ViewMode::Test {
                        temporal: k,
                        num_temporal,
                        spatial: c,
                    },
                    short,
                )
            })
        })
        .collect()
}

/// Deterministic evaluation views (PySlowFast's `uniform_crop`: offsets ceil((side - S) / 2),
/// or 0 and side - S along the long side for crops 0 and 2) of the frame resized to
/// `short_side` (at least the crop): the crop itself for validation and multi-crop tests,
/// the smallest training jitter scale for PySlowFast's single-crop test.
#[allow(clippy::too_many_arguments)]
pub fn eval_params(
    mode: ViewMode,
    num_frames: u32,
    height: u32,
    width: u32,
    t: u32,
    crop: u32,
    stride: u32,
    short_side: u32,
) -> super::ClipParams {
    let short_side = short_side.max(crop);
    let delta = u64::from(num_frames).saturating_sub(u64::from(t) * u64::from(stride)) as u32;
    let (start, spatial) = match mode {
        ViewMode::Val => (delta / 2, 1),
        ViewMode::Test {
            temporal,
            num_temporal,
            spatial,
        } => (
            (u64::from(delta) * u64::from(temporal) / u64::from(num_temporal.max(1))) as u32,
            spatial,
        ),
    };
    let (rh, rw) = resized_size(height, width, short_side);
    let mut y = (rh - crop.min(rh)).div_ceil(2);
    let mut x = (rw - crop.min(rw)).div_ceil(2);
    if rh > rw {
        match spatial {
            0 => y = 0,
            2 => y = rh - crop,
            _ => {}
        }
    } else {
        match spatial {
            0 => x = 0,
            2 => x = rw - crop,
            _ => {}
        }
    }
    super::ClipParams {
        start_frame: start,
        stride,
        short_side,
        crop_x: x,
        crop_y: y,
        flip: false,
    }
}

/// How a dataset turns a clip's draw into frame indices (`train.dataset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameRule {
    /// Kinetics (PySlowFast's decoder.py): trunc(linspace(start, start + T*stride - 1, T)),
    /// from the start and stride of [`super::ClipParams`].
    Linspace,
    /// Charades (charades.py `get_seq_frames`): T frames `rate` apart, clamped to the video.
    Charades,
    /// Something-Something V2 (ssv2.py `get_seq_frames`): the video cut into T segments, one
    /// frame from each.
    Segments,
}

/// One clip's sampling: the spatial window in `params` (and, for [`FrameRule::Linspace`],
/// its start and stride), and for the frame-list rules the frame indices themselves.
#[derive(Debug, Clone, PartialEq)]
pub struct Draw {
    pub params: super::ClipParams,
    pub frames: Option<Vec<u32>>,
}

impl From<super::ClipParams> for Draw {
    fn from(params: super::ClipParams) -> Draw {
        Draw {
            params,
            frames: None,
        }
    }
}

/// Charades' clip: frames start + i * rate for i < T, clamped to [0, num_frames - 1]; the
/// start is negative when the clip is longer than the video.
pub fn charades_indices(start: i64, rate: u32, t: u32, num_frames: u32) -> Vec<u32> {
    let last = i64::from(num_frames.saturating_sub(1));
    (0..i64::from(t))
        .map(|i| (start + i * i64::from(rate)).clamp(0, last) as u32)
        .collect()
}

/// (T - 1) * rate + 1: the frames a Charades clip spans.
fn charades_span(t: u32, rate: u32) -> i64 {
    i64::from(t.saturating_sub(1)) * i64::from(rate) + 1
}

/// Charades' random start: uniform over [0, n - span], or over [n - span, 0] when the clip
/// is longer than the video (`random.randint`, both ends included).
pub fn charades_random_start(rng: &mut Rng, num_frames: u32, t: u32, rate: u32) -> i64 {
    let d = i64::from(num_frames) - charades_span(t, rate);
    let width = d.unsigned_abs().min(u64::from(u32::MAX)) as u32;
    let k = i64::from(rng.int_inclusive(0, width));
    if d >= 0 {
        k
    } else {
        d + k
    }
}

/// Charades' test view `k` of `num_views`: round(max(n - span, 0) / (K - 1) * k), Python's
/// round (half to even). One view takes the centred clip, where PySlowFast divides by zero.
pub fn charades_view_start(num_frames: u32, t: u32, rate: u32, k: u32, num_views: u32) -> i64 {
    let gap = (i64::from(num_frames) - charades_span(t, rate)).max(0) as f64;
    if num_views <= 1 {
        return (gap / 2.0).floor() as i64;
    }
    round_half_even(gap / f64::from(num_views - 1) * f64::from(k)) as i64
}

/// SSv2's frames: segment i of T spans [round(g * i), round(g * (i + 1))] with
/// g = (n - 1) / T (numpy's round, half to even); training takes a uniform frame of each
/// segment (`random.randint`, both ends included), evaluation its middle ((lo + hi) // 2).
pub fn segment_indices(num_frames: u32, t: u32, rng: Option<&mut Rng>) -> Vec<u32> {
    let g = f64::from(num_frames.saturating_sub(1)) / f64::from(t.max(1));
    let bounds = |i: u32| {
        (
            round_half_even(g * f64::from(i)) as u32,
            round_half_even(g * f64::from(i + 1)) as u32,
        )
    };
    match rng {
        Some(rng) => (0..t)
            .map(|i| {
                let (lo, hi) = bounds(i);
                rng.int_inclusive(lo, hi)
            })
            .collect(),
        None => (0..t)
            .map(|i| {
                let (lo, hi) = bounds(i);
                (lo + hi) / 2
            })
            .collect(),
    }
}

/// Training's draw under `rule`: [`train_params`] for Kinetics; for the frame-list rules the
/// stride, the start or segment frames, then the same spatial draws. `random_time` false
/// takes SSv2's middle frames with random spatial draws: PySlowFast's SSv2 validation.
#[allow(clippy::too_many_arguments)]
pub fn train_draw(
    rng: &mut Rng,
    rule: FrameRule,
    random_time: bool,
    num_frames: u32,
    height: u32,
    width: u32,
    t: u32,
    crop: u32,
    stride_range: [u32; 2],
    jitter: [u32; 2],
    inv_uniform: bool,
    random_flip: bool,
) -> Draw {
    let frames = match rule {
        FrameRule::Linspace => {
            return train_params(
                rng,
                num_frames,
                height,
                width,
                t,
                crop,
                stride_range,
                jitter,
                inv_uniform,
                random_flip,
            )
            .into()
        }
        FrameRule::Charades => {
            let rate = rng.int_inclusive(stride_range[0], stride_range[1]);
            let start = charades_random_start(rng, num_frames, t, rate);
            charades_indices(start, rate, t, num_frames)
        }
        FrameRule::Segments => segment_indices(num_frames, t, random_time.then_some(&mut *rng)),
    };
    Draw {
        params: spatial_train(rng, height, width, crop, jitter, inv_uniform, random_flip),
        frames: Some(frames),
    }
}

/// PySlowFast's Charades and SSv2 test views: K clips, each with crops 0..C along the long
/// side of frames whose short side is resized to the test crop (one crop is crop 0, the
/// left or top one, where Kinetics takes the centre at the smallest jitter scale).
pub fn frame_list_test_views(num_temporal: u32, crops: u32, crop: u32) -> Vec<(ViewMode, u32)> {
    (0..num_temporal)
        .flat_map(|k| {
            (0..crops.clamp(1, 3)).map(move |c| {
                (
                    ViewMode::Test {
                        temporal: k,
                        num_temporal,
                        spatial: c,
                    },
                    crop,
                )
            })
        })
        .collect()
}

/// Evaluation's draw under `rule`: [`eval_params`]' spatial view, and for Charades test view
/// k of K ([`charades_view_start`]; validation is centred) or SSv2's middle frames.
#[allow(clippy::too_many_arguments)]
pub fn eval_draw(
    rule: FrameRule,
    mode: ViewMode,
    num_frames: u32,
    height: u32,
    width: u32,
    t: u32,
    crop: u32,
    stride: u32,
    short_side: u32,
) -> Draw {
    let params = eval_params(mode, num_frames, height, width, t, crop, stride, short_side);
    let frames = match (rule, mode) {
        (FrameRule::Linspace, _) => None,
        (FrameRule::Segments, _) => Some(segment_indices(num_frames, t, None)),
        (FrameRule::Charades, ViewMode::Val) => Some(charades_indices(
            charades_view_start(num_frames, t, stride, 0, 1),
            stride,
            t,
            num_frames,
        )),
        (
            FrameRule::Charades,
            ViewMode::Test {
                temporal,
                num_temporal,
                ..
            },
        ) => Some(charades_indices(
            charades_view_start(num_frames, t, stride, temporal, num_temporal),
            stride,
            t,
            num_frames,
        )),
    };
    Draw { params, frames }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowfast_index_rule() {
        // Spec 3.1: not an exact stride of 4.
        assert_eq!(slow_indices(32, 4), [0, 4, 8, 13, 17, 22, 26, 31]);
        assert_eq!(slow_indices(16, 4), [0, 5, 10, 15]);
        assert_eq!(slow_indices(8, 4), [0, 7]);
    }

    #[test]
    fn temporal_indices_clamp_to_the_clip() {
        assert_eq!(temporal_indices(0, 2, 4, 100), [0, 2, 4, 7]);
        assert_eq!(temporal_indices(10, 1, 3, 100), [10, 11, 12]);
        assert_eq!(temporal_indices(0, 8, 4, 10), [0, 9, 9, 9]);
        assert_eq!(temporal_indices(5, 3, 1, 100), [5]);
    }

    #[test]
    fn target_fps_scales_the_span() {
        // 8 frames at stride 2 from a 60 fps video at target 30: 32 source frames.
        let idx = temporal_indices_scaled(5, 2, 8, 1000, 2.0);
        assert_eq!(idx.first(), Some(&10));
        assert_eq!(idx.last(), Some(&41));
        // A 15 fps video: 8 source frames, every other target frame repeats.
        assert_eq!(
            temporal_indices_scaled(0, 2, 8, 1000, 0.5),
            [0, 1, 2, 3, 4, 5, 6, 7]
        );
        assert_eq!(
            temporal_indices_scaled(3, 2, 8, 100, 1.0),
            temporal_indices(3, 2, 8, 100)
        );
        assert_eq!(fps_scale(Some(60.0), 30), 2.0);
        assert_eq!(fps_scale(None, 30), 1.0);
        assert_eq!(frames_at_scale(300, 2.0), 150);
        assert_eq!(frames_at_scale(300, 1.0), 300);
    }

    #[test]
    fn resize_keeps_aspect_and_floors() {
        assert_eq!(resized_size(256, 340, 128), (128, 170));
        assert_eq!(resized_size(340, 256, 181), (240, 181));
        assert_eq!(resized_size(256, 340, 256), (256, 340));
        assert_eq!(resized_size(64, 64, 40), (40, 40));
    }

    #[test]
    fn rng_ranges() {
        let mut r = Rng::new(1, 2, 3);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let v = r.int_inclusive(2, 6);
            assert!((2..=6).contains(&v));
            seen[(v - 2) as usize] = true;
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
        }
        assert!(seen.iter().all(|&s| s));
        assert_ne!(Rng::new(1, 2, 3).next_u64(), Rng::new(1, 2, 4).next_u64());
        assert_ne!(Rng::new(1, 2, 3).next_u64(), Rng::new(1, 3, 3).next_u64());
    }

    #[test]
    fn train_params_stay_in_range() {
        let mut r = Rng::new(0, 0, 0);
        for _ in 0..500 {
            let p = train_params(
                &mut r,
                64,
                256,
                340,
                8,
                112,
                [2, 8],
                [128, 320],
                false,
                true,
            );
            assert!((2..=8).contains(&p.stride));
            assert!(p.start_frame + 8 * p.stride <= 64 || p.start_frame == 0);
            assert!((128..=320).contains(&p.short_side));
            let (rh, rw) = resized_size(256, 340, p.short_side);
            assert!(p.crop_y + 112 <= rh && p.crop_x + 112 <= rw);
        }
    }

    #[test]
    fn eval_views() {
        let v = eval_params(ViewMode::Val, 100, 256, 340, 8, 224, 2, 224);
        assert_eq!(
            (v.start_frame, v.short_side, v.crop_y, v.crop_x, v.flip),
            (42, 224, 0, 37, false)
        );
        let left = eval_params(
            ViewMode::Test {
                temporal: 0,
                num_temporal: 10,
                spatial: 0,
            },
            100,
            256,
            340,
            8,
            224,
            2,
            224,
        );
        assert_eq!((left.start_frame, left.crop_x), (0, 0));
        let right = eval_params(
            ViewMode::Test {
                temporal: 9,
                num_temporal: 10,
                spatial: 2,
            },
            100,
            256,
            340,
            8,
            224,
            2,
            224,
        );
        assert_eq!((right.start_frame, right.crop_x), (75, 297 - 224));
    }
}
