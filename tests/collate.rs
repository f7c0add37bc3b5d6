//! Collation: equality with PyTorch's float pipeline, the SlowFast index rule, sampling modes,
//! determinism and every bad input.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::repo;
use multigrid::collate::{
    batch_len, collate_explicit, eval_params, pack_slow, resized_size, slow_indices, step_params,
    Clip, ClipParams, Normalize, Rng, ViewMode,
};
use multigrid::{Plan, Schedule};

/// A python with torch: $MG_PYTHON, else the set-up's .venv.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MG_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no .venv/bin/python with torch: run scripts/setup.sh, or set MG_PYTHON to a python with torch 2.11"
    );
    venv
}

struct OwnedClip {
    frames: Vec<u8>,
    n: u32,
    h: u32,
    w: u32,
}

impl OwnedClip {
    fn random(rng: &mut Rng, n: u32, h: u32, w: u32) -> OwnedClip {
        let frames = (0..n * h * w * 3)
            .map(|_| (rng.next_u64() >> 56) as u8)
            .collect();
        OwnedClip { frames, n, h, w }
    }
    fn clip(&self) -> Clip<'_> {
        Clip {
            frames: &self.frames,
            num_frames: self.n,
            height: self.h,
            width: self.w,
        }
    }
}

fn reference(
    clips: &[OwnedClip],
    params: &[ClipParams],
    t: u32,
    s: u32,
    norm: &Normalize,
) -> Vec<f32> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("collate_ref_{t}_{s}_{}", clips.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let frames_file = dir.join("frames.u8");
    let mut raw = Vec::new();
    let mut specs = Vec::new();
    for (c, p) in clips.iter().zip(params) {
        specs.push(serde_json::json!({
            "offset": raw.len(), "num_frames": c.n, "height": c.h, "width": c.w,
            "start_frame": p.start_frame, "stride": p.stride, "short_side": p.short_side,
            "crop_x": p.crop_x, "crop_y": p.crop_y, "flip": p.flip,
        }));
        raw.extend_from_slice(&c.frames);
    }
    std::fs::write(&frames_file, &raw).unwrap();
    let spec = serde_json::json!({
        "frames_file": frames_file, "num_frames": t, "crop_size": s,
        "mean": norm.mean, "std": norm.std, "clips": specs,
    });
    let spec_file = dir.join("spec.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    let out_file = dir.join("out.f32");
    let status = Command::new(python())
        .arg(repo().join("scripts/collate_reference.py"))
        .arg("check")
        .arg(&spec_file)
        .arg(&out_file)
        .status()
        .unwrap();
    assert!(status.success(), "collate_reference.py failed");
    std::fs::read(&out_file)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn random_params(rng: &mut Rng, c: &OwnedClip, s: u32) -> ClipParams {
    let stride = rng.int_inclusive(1, 4);
    let start = rng.int_inclusive(0, c.n - 1);
    let short = c.h.min(c.w);
    // Both up- and down-scaling, and the unchanged size.
    let short_side = match rng.int_inclusive(0, 2) {
        0 => short.max(s),
        1 => rng.int_inclusive(s, s + 7),
        _ => rng.int_inclusive(s, 2 * short.max(s)),
    };
    let (rh, rw) = resized_size(c.h, c.w, short_side);
    ClipParams {
        start_frame: start,
        stride,
        short_side,
        crop_x: rng.int_inclusive(0, rw - s),
        crop_y: rng.int_inclusive(0, rh - s),
        flip: rng.int_inclusive(0, 1) == 1,
    }
}

#[test]
fn equals_pytorch_float_pipeline() {
    let mut rng = Rng::new(11, 0, 0);
    let sizes = [
        (12, 40, 56),
        (9, 64, 48),
        (20, 33, 77),
        (5, 64, 64),
        (30, 48, 50),
        (7, 90, 36),
    ];
    for &(t, s) in &[(8u32, 32u32), (4, 17), (1, 24)] {
        let clips: Vec<OwnedClip> = sizes
            .iter()
            .map(|&(n, h, w)| OwnedClip::random(&mut rng, n, h, w))
            .collect();
        let params: Vec<ClipParams> = clips
            .iter()
            .map(|c| random_params(&mut rng, c, s))
            .collect();
        let norm = Normalize {
            mean: [0.45, 0.40, 0.35],
            std: [0.225, 0.25, 0.2],
            reverse_channels: false,
        };
        let views: Vec<Clip> = clips.iter().map(OwnedClip::clip).collect();
        let mut out = vec![0f32; batch_len(clips.len(), t, s)];
        collate_explicit(&views, &params, t, s, &norm, &mut out).unwrap();
        // DATA.REVERSE_INPUT_CHANNEL: the same planes, in the order 2, 1, 0.
        let mut bgr = vec![0f32; out.len()];
        let reversed = Normalize {
            reverse_channels: true,
            ..norm
        };
        collate_explicit(&views, &params, t, s, &reversed, &mut bgr).unwrap();
        let plane = (t * s * s) as usize;
        for (rgb_clip, bgr_clip) in out.chunks(3 * plane).zip(bgr.chunks(3 * plane)) {
            for c in 0..3 {
                assert_eq!(
                    rgb_clip[c * plane..(c + 1) * plane],
                    bgr_clip[(2 - c) * plane..(3 - c) * plane]
                );
            }
        }
        let want = reference(&clips, &params, t, s, &norm);
        assert_eq!(want.len(), out.len());
        let max = out
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            max <= 1e-4,
            "T={t} S={s}: max abs difference {max} against PyTorch"
        );
    }
}

#[test]
fn threads_do_not_change_the_result() {
    let mut rng = Rng::new(5, 0, 0);
    let clips: Vec<OwnedClip> = (0..5)
        .map(|_| OwnedClip::random(&mut rng, 16, 48, 64))
        .collect();
    let params: Vec<ClipParams> = clips
        .iter()
        .map(|c| random_params(&mut rng, c, 32))
        .collect();
    let views: Vec<Clip> = clips.iter().map(OwnedClip::clip).collect();
    let mut a = vec![0f32; batch_len(5, 8, 32)];
    let mut b = a.clone();
    multigrid::collate::set_num_threads(1).unwrap();
    collate_explicit(&views, &params, 8, 32, &Normalize::default(), &mut a).unwrap();
    multigrid::collate::set_num_threads(3).unwrap();
    collate_explicit(&views, &params, 8, 32, &Normalize::default(), &mut b).unwrap();
    assert_eq!(a, b);
}

#[test]
fn slow_pathway_takes_the_slowfast_frames() {
    let (n, t, s) = (2usize, 32u32, 4u32);
    let frame = (s * s) as usize;
    let fast: Vec<f32> = (0..batch_len(n, t, s))
        .map(|i| (i / frame) as f32)
        .collect();
    let idx = slow_indices(t, 4);
    assert_eq!(idx, [0, 4, 8, 13, 17, 22, 26, 31]);
    let mut slow = vec![0f32; n * 3 * 8 * frame];
    pack_slow(&fast, n, t, s, 4, &mut slow).unwrap();
    for nc in 0..n * 3 {
        for (k, &f) in idx.iter().enumerate() {
            let v = slow[(nc * 8 + k) * frame];
            assert_eq!(v, (nc * t as usize + f as usize) as f32);
        }
    }
    assert!(pack_slow(&fast, n, t, s, 4, &mut slow[1..]).is_err());
    assert!(pack_slow(&fast, n, t, s, 0, &mut slow).is_err());
}

#[test]
fn eval_modes_take_centre_and_three_crops() {
    // Val: centred start, short side = crop, centre crop.
    let v = eval_params(ViewMode::Val, 64, 48, 80, 8, 32, 2, 32);
    let (rh, rw) = resized_size(48, 80, 32);
    assert_eq!((rh, rw), (32, 53));
    assert_eq!((v.start_frame, v.crop_y, v.crop_x), (24, 0, 11));
    // Test: 3 crops along the long side, K temporal views uniformly spaced.
    let xs: Vec<u32> = (0..3)
        .map(|sp| {
            eval_params(
                ViewMode::Test {
                    temporal: 0,
                    num_temporal: 10,
                    spatial: sp,
                },
                64,
                48,
                80,
                8,
                32,
                2,
                32,
            )
            .crop_x
        })
        .collect();
    assert_eq!(xs, [0, 11, 21]);
    let starts: Vec<u32> = (0..4)
        .map(|k| {
            eval_params(
                ViewMode::Test {
                    temporal: k,
                    num_temporal: 4,
                    spatial: 1,
                },
                64,
                48,
                80,
                8,
                32,
                2,
                32,
            )
            .start_frame
        })
        .collect();
    assert_eq!(starts, [0, 12, 24, 36]);
    // Portrait frames crop along the height.
    let ys: Vec<u32> = (0..3)
        .map(|sp| {
            eval_params(
                ViewMode::Test {
                    temporal: 0,
                    num_temporal: 1,
                    spatial: sp,
                },
                64,
                80,
                48,
                8,
                32,
                2,
                32,
            )
            .crop_y
        })
        .collect();
    assert_eq!(ys, [0, 11, 21]);
}

/// PySlowFast's test views (kinetics.py): with 1 crop the short side goes to the smallest
/// training jitter scale and the centre is taken; with 2 crops positions 0 and 1 at the test
/// crop; with 3 all three.
#[test]
fn test_views_follow_pyslowfast() {
    let spatial = |c| {
        multigrid::collate::test_views(2, c, 32, 40)
            .into_iter()
            .map(|(v, short)| match v {
                ViewMode::Test {
                    temporal, spatial, ..
                } => (temporal, spatial, short),
                ViewMode::Val => panic!("a val view among the test views"),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(spatial(1), [(0, 1, 40), (1, 1, 40)]);
    assert_eq!(spatial(2), [(0, 0, 32), (0, 1, 32), (1, 0, 32), (1, 1, 32)]);
    assert_eq!(spatial(3).len(), 6);
    // A jitter scale below the crop cannot be resized to: the crop wins.
    assert_eq!(multigrid::collate::test_views(1, 1, 48, 40)[0].1, 48);
    // The single crop of a 48 x 80 frame: resized to 40 x 66, the centre 32 x 32.
    let one = ViewMode::Test {
        temporal: 0,
        num_temporal: 1,
        spatial: 1,
    };
    let p = eval_params(one, 64, 48, 80, 8, 32, 2, 40);
    assert_eq!(resized_size(48, 80, 40), (40, 66));
    assert_eq!((p.short_side, p.crop_y, p.crop_x), (40, 4, 17));
}

#[test]
fn training_draws_are_deterministic_per_seed_epoch_and_index() {
    let json =
        std::fs::read_to_string(repo().join("configs/kinetics_slowfast_8x8_r50_multigrid.json"))
            .unwrap();
    let schedule = Schedule::from_json(&json).unwrap();
    let plan = Plan::new(&schedule, 1000, 8, 0, 42).unwrap();
    let step = plan.step(0).unwrap();
    let mut indices = Vec::new();
    plan.step_indices(0, &mut indices).unwrap();
    let mut rng = Rng::new(0, 0, 0);
    let clips: Vec<OwnedClip> = (0..indices.len())
        .map(|_| OwnedClip::random(&mut rng, 1, 256, 340))
        .collect();
    // Only the shape matters for the draws; give each clip 300 frames without the bytes.
    let views: Vec<Clip> = clips
        .iter()
        .map(|c| Clip {
            num_frames: 300,
            ..c.clip()
        })
        .collect();
    let a = step_params(&plan, &step, &indices, &views).unwrap();
    let b = step_params(&plan, &step, &indices, &views).unwrap();
    assert_eq!(a, b);
    for p in &a {
        assert!((2..=8).contains(&p.stride), "{p:?}");
        assert!((128..=320).contains(&p.short_side), "{p:?}");
        let (rh, rw) = resized_size(256, 340, p.short_side);
        assert!(
            p.crop_x + 112 < rw.max(113) && p.crop_y + 112 <= rh,
            "{p:?}"
        );
    }
    assert!(a.iter().any(|p| p.flip) && a.iter().any(|p| !p.flip));
    assert!(a.windows(2).any(|w| w[0] != w[1]));
    let other = Plan::new(&schedule, 1000, 8, 0, 43).unwrap();
    let c = step_params(&other, &step, &indices, &views).unwrap();
    assert_ne!(a, c, "another seed draws differently");
    assert!(step_params(&plan, &step, &indices[1..], &views).is_err());
}

#[test]
fn bad_inputs_are_rejected_before_writing() {
    let mut rng = Rng::new(3, 0, 0);
    let c = OwnedClip::random(&mut rng, 10, 40, 60);
    let ok = ClipParams {
        start_frame: 0,
        stride: 1,
        short_side: 32,
        crop_x: 0,
        crop_y: 0,
        flip: false,
    };
    let norm = Normalize::default();
    let check = |clip: Clip, p: ClipParams, norm: &Normalize, out_len: usize, what: &str| {
        let mut out = vec![7f32; out_len];
        let e = collate_explicit(&[clip], &[p], 4, 32, norm, &mut out)
            .unwrap_err()
            .to_string();
        assert!(e.contains(what), "{e:?} does not say {what:?}");
        assert!(out.iter().all(|&v| v == 7.0), "wrote before failing");
    };
    let len = batch_len(1, 4, 32);
    check(
        Clip {
            num_frames: 0,
            ..c.clip()
        },
        ok,
        &norm,
        len,
        "empty clip",
    );
    check(
        Clip {
            width: 0,
            ..c.clip()
        },
        ok,
        &norm,
        len,
        "empty clip",
    );
    check(
        Clip {
            frames: &c.frames[..100],
            ..c.clip()
        },
        ok,
        &norm,
        len,
        "bytes of frames",
    );
    check(c.clip(), ok, &norm, len - 1, "output holds");
    check(
        c.clip(),
        ClipParams { crop_x: 30, ..ok },
        &norm,
        len,
        "outside the resized",
    );
    check(
        c.clip(),
        ClipParams { crop_y: 1, ..ok },
        &norm,
        len,
        "outside the resized",
    );
    check(
        c.clip(),
        ClipParams {
            short_side: 31,
            ..ok
        },
        &norm,
        len,
        "smaller than the crop",
    );
    check(
        c.clip(),
        ClipParams { stride: 0, ..ok },
        &norm,
        len,
        "stride",
    );
    check(
        c.clip(),
        ClipParams {
            start_frame: 10,
            ..ok
        },
        &norm,
        len,
        "start_frame",
    );
    check(
        c.clip(),
        ok,
        &Normalize {
            std: [0.2, 0.0, 0.2],
            ..norm
        },
        len,
        "std[1]",
    );
    check(
        c.clip(),
        ok,
        &Normalize {
            std: [f32::NAN, 0.2, 0.2],
            ..norm
        },
        len,
        "std[0]",
    );
    let mut out = vec![0f32; len];
    assert!(collate_explicit(&[c.clip()], &[], 4, 32, &norm, &mut out).is_err());
    assert!(collate_explicit(&[c.clip()], &[ok], 0, 32, &norm, &mut out).is_err());
}

#[cfg(feature = "torch")]
#[test]
fn tensors_hold_the_same_batch() {
    let mut rng = Rng::new(8, 0, 0);
    let clips: Vec<OwnedClip> = (0..3)
        .map(|_| OwnedClip::random(&mut rng, 20, 40, 48))
        .collect();
    let params: Vec<ClipParams> = clips
        .iter()
        .map(|c| random_params(&mut rng, c, 24))
        .collect();
    let views: Vec<Clip> = clips.iter().map(OwnedClip::clip).collect();
    let norm = Normalize::default();
    let (slow, fast) =
        multigrid::collate::tensor::collate_slowfast(&views, &params, 16, 24, 4, &norm).unwrap();
    let slow = slow.unwrap();
    assert_eq!(fast.size(), [3, 3, 16, 24, 24]);
    assert_eq!(slow.size(), [3, 3, 4, 24, 24]);
    let mut want = vec![0f32; batch_len(3, 16, 24)];
    collate_explicit(&views, &params, 16, 24, &norm, &mut want).unwrap();
    let got: Vec<f32> = Vec::<f32>::try_from(fast.flatten(0, -1)).unwrap();
    assert_eq!(got, want);
    // The slow pathway is frames [0, 5, 10, 15] of the fast one.
    let picked = fast.index_select(2, &tch::Tensor::from_slice(&[0i64, 5, 10, 15]));
    assert!(picked.equal(&slow));
}

/// SSv2's segment sampling against ssv2.py `get_seq_frames` (values from PySlowFast's own
/// formula in Python: numpy's round is half to even, so segment bounds 4.5 -> 4, 13.5 -> 14).
#[test]
fn ssv2_segments_match_get_seq_frames() {
    use multigrid::collate::{segment_indices, Rng};
    assert_eq!(segment_indices(37, 8, None), [2, 6, 11, 16, 20, 24, 29, 34]);
    // A video shorter than the clip repeats frames.
    assert_eq!(segment_indices(5, 8, None), [0, 0, 1, 2, 2, 2, 3, 4]);
    assert_eq!(
        segment_indices(300, 16, None),
        [9, 28, 46, 65, 84, 102, 121, 140, 159, 177, 196, 215, 233, 252, 271, 289]
    );
    // Training draws one frame inside each segment's bounds, both ends included.
    let bounds = [
        (0, 4),
        (4, 9),
        (9, 14),
        (14, 18),
        (18, 22),
        (22, 27),
        (27, 32),
        (32, 36),
    ];
    let mut seen = [[false; 2]; 8];
    for seed in 0..400 {
        let picks = segment_indices(37, 8, Some(&mut Rng::new(seed, 0, 0)));
        for (i, (&f, &(lo, hi))) in picks.iter().zip(&bounds).enumerate() {
            assert!(
                (lo..=hi).contains(&f),
                "segment {i}: {f} outside {lo}..={hi}"
            );
            seen[i][0] |= f == lo;
            seen[i][1] |= f == hi;
        }
    }
    assert!(seen.iter().all(|s| s[0] && s[1]), "both ends are drawn");
}

/// Charades' temporal sampling against charades.py `get_seq_frames`: frames `rate` apart from
/// the start, clamped; test view k of K starts at round(gap / (K - 1) * k) with Python's round.
#[test]
fn charades_sampling_matches_get_seq_frames() {
    use multigrid::collate::{charades_indices, charades_random_start, charades_view_start, Rng};
    let starts = |n, t, r, k| {
        (0..k)
            .map(|i| charades_view_start(n, t, r, i, k))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        starts(100, 8, 4, 10),
        [0, 8, 16, 24, 32, 39, 47, 55, 63, 71]
    );
    assert_eq!(starts(30, 8, 2, 10), [0, 2, 3, 5, 7, 8, 10, 12, 13, 15]);
    // gap 2.5: Python's round(2.5) is 2, not 3.
    assert_eq!(starts(34, 8, 4, 3), [0, 2, 5]);
    assert_eq!(charades_indices(-5, 4, 8, 20), [0, 0, 3, 7, 11, 15, 19, 19]);
    assert_eq!(charades_indices(3, 2, 4, 100), [3, 5, 7, 9]);
    // Training starts: [0, n - span] for a long video, [n - span, 0] for a short one.
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for seed in 0..500 {
        let s = charades_random_start(&mut Rng::new(seed, 0, 0), 40, 8, 4);
        lo = lo.min(s);
        hi = hi.max(s);
    }
    assert_eq!((lo, hi), (0, 40 - 29));
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for seed in 0..500 {
        let s = charades_random_start(&mut Rng::new(seed, 0, 0), 20, 8, 4);
        lo = lo.min(s);
        hi = hi.max(s);
    }
    assert_eq!((lo, hi), (20 - 29, 0));
}

/// PySlowFast's Charades and SSv2 test views resize the short side to the test crop and take
/// crops 0..C (one crop: crop 0), unlike Kinetics' single centred crop.
#[test]
fn frame_list_test_views_take_crops_from_the_left() {
    use multigrid::collate::{frame_list_test_views, ViewMode};
    let v = frame_list_test_views(1, 1, 32);
    assert_eq!(
        v,
        [(
            ViewMode::Test {
                temporal: 0,
                num_temporal: 1,
                spatial: 0
            },
            32
        )]
    );
    let v = frame_list_test_views(2, 3, 32);
    assert_eq!(v.len(), 6);
    assert!(v.iter().all(|&(_, short)| short == 32));
    assert_eq!(
        v.iter()
            .map(|(m, _)| match m {
                ViewMode::Test {
                    temporal, spatial, ..
                } => (*temporal, *spatial),
                ViewMode::Val => unreachable!(),
            })
            .collect::<Vec<_>>(),
        [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    );
}
