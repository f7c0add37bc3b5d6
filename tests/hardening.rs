//! What a caller sends can make a call fail, never abort, hang or half-write: one test per
//! finding of the hardening review, each written to fail on the code before its fix.

mod common;

use std::ffi::{c_char, CStr, CString};
use std::ptr;

use multigrid::ffi::*;
use multigrid::{Config, Plan, Schedule};

fn last_error() -> String {
    let mut buf = vec![0 as c_char; 2048];
    mg_last_error_message(buf.as_mut_ptr(), buf.len());
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn schedule_status(patch: serde_json::Value) -> (mg_status, String) {
    let json = CString::new(common::kinetics_json_with(patch)).unwrap();
    let mut s = ptr::null_mut();
    let status = mg_schedule_new(json.as_ptr(), &mut s);
    let msg = last_error();
    if status == MG_STATUS_OK {
        // Before the bounds, this is where a huge schedule aborted the process.
        let mut p = ptr::null_mut();
        let plan_status = mg_plan_new(s, 240_000, 8, 0, 0, &mut p);
        mg_plan_free(p);
        mg_schedule_free(s);
        return (plan_status, last_error());
    }
    assert!(s.is_null());
    (status, msg)
}

#[test]
fn huge_config_numbers_are_errors_naming_the_key() {
    for (patch, key) in [
        (
            serde_json::json!({"multigrid": {"epoch_factor": 1e12}}),
            "multigrid.epoch_factor",
        ),
        (
            serde_json::json!({"solver": {"max_epoch": 4_000_000_000u32}}),
            "solver.max_epoch",
        ),
        (
            serde_json::json!({"train": {"batch_size": 4_000_000_000u32}}),
            "train.batch_size",
        ),
        (
            serde_json::json!({"data": {"num_frames": 100_000}}),
            "data.num_frames",
        ),
        (
            serde_json::json!({"model": {"num_classes": 4_000_000_000u32}}),
            "model.num_classes",
        ),
        // Tiny long-cycle factors: a base shape of 1 frame at 1 px makes a relative batch of
        // T0 x S0^2 clips a step.
        (
            serde_json::json!({"multigrid": {"short_cycle": false,
                                             "long_cycle_factors": [[0.07, 0.005], [1, 1]]}}),
            "multigrid.long_cycle_factors",
        ),
    ] {
        let (status, msg) = schedule_status(patch.clone());
        assert_eq!(status, MG_STATUS_INVALID_CONFIG, "{patch}: {msg}");
        assert!(msg.contains(key), "{patch}: {msg}");
    }
    // The largest accepted factor still makes a plan (bounded, so this is quick).
    let (status, msg) = schedule_status(serde_json::json!({"multigrid": {"epoch_factor": 100}}));
    assert_eq!(status, MG_STATUS_OK, "{msg}");
}

#[test]
fn a_dataset_size_beyond_the_limit_is_invalid() {
    let s = common::kinetics();
    let e = Plan::new(&s, u64::MAX, 1, 0, 0).unwrap_err();
    assert!(e.to_string().contains("dataset_size"), "{e}");
}

fn clip_params(stride: u32, short_side: u32) -> mg_clip_params {
    mg_clip_params {
        start_frame: 0,
        stride,
        short_side,
        crop_x: 0,
        crop_y: 0,
        flip: false,
    }
}

#[test]
fn collation_sizes_that_overflow_are_refused() {
    let (mean, std) = ([0.5f32; 3], [0.25f32; 3]);
    let mut out = vec![0f32; 16];
    // A clip whose byte count overflows: no frames are read, and the call says why.
    let huge = mg_clip {
        frames: ptr::null(),
        num_frames: u32::MAX,
        height: u32::MAX,
        width: u32::MAX,
    };
    let status = mg_collate_explicit(
        &huge,
        &clip_params(1, 32),
        1,
        2,
        32,
        mean.as_ptr(),
        std.as_ptr(),
        out.as_mut_ptr(),
        out.len(),
    );
    assert_eq!(status, MG_STATUS_INVALID_ARGUMENT, "{}", last_error());
    // A batch shape whose float count overflows.
    let frames = vec![9u8; 2 * 40 * 40 * 3];
    let clip = mg_clip {
        frames: frames.as_ptr(),
        num_frames: 2,
        height: 40,
        width: 40,
    };
    for (t, s) in [(u32::MAX, u32::MAX), (u32::MAX, 32), (2, 1 << 20)] {
        let status = mg_collate_explicit(
            &clip,
            &clip_params(1, 40),
            1,
            t,
            s,
            mean.as_ptr(),
            std.as_ptr(),
            out.as_mut_ptr(),
            out.len(),
        );
        assert_eq!(
            status,
            MG_STATUS_INVALID_ARGUMENT,
            "{t} {s}: {}",
            last_error()
        );
    }
    // T x stride past u32 is a valid request: the frames clamp to the clip.
    let len = 3 * 2 * 32 * 32;
    let mut out = vec![0f32; len];
    let status = mg_collate_explicit(
        &clip,
        &clip_params(u32::MAX, 32),
        1,
        2,
        32,
        mean.as_ptr(),
        std.as_ptr(),
        out.as_mut_ptr(),
        len,
    );
    assert_eq!(status, MG_STATUS_OK, "{}", last_error());
    // Too many threads is an error, not an attempt to start them.
    assert_eq!(
        mg_collate_set_num_threads(usize::MAX),
        MG_STATUS_INVALID_ARGUMENT
    );
}

/// A small schedule (tiny shapes, one epoch) as JSON.
fn tiny_config() -> serde_json::Value {
    serde_json::json!({
        "data": {"num_frames": 8, "sampling_rate": 1, "train_jitter_scales": [34, 40],
                 "train_crop_size": 32, "test_crop_size": 32},
        "train": {"batch_size": 2},
        "solver": {"base_lr": 0.02, "lrs": [1], "steps": [0], "max_epoch": 1},
        "model": {"depth": 18, "width_per_group": 8, "alpha": 2, "num_classes": 12},
        "run": {"device": "cpu"}
    })
}

fn tiny_plan(dataset_size: u64) -> *mut mg_plan {
    let json = CString::new(tiny_config().to_string()).unwrap();
    let (mut s, mut p) = (ptr::null_mut(), ptr::null_mut());
    assert_eq!(mg_schedule_new(json.as_ptr(), &mut s), MG_STATUS_OK);
    assert_eq!(
        mg_plan_new(s, dataset_size, 1, 0, 0, &mut p),
        MG_STATUS_OK,
        "{}",
        last_error()
    );
    mg_schedule_free(s);
    p
}

#[test]
fn collate_step_writes_nothing_when_a_check_fails() {
    let p = tiny_plan(8);
    let (mut slow_len, mut fast_len) = (0usize, 0usize);
    assert_eq!(
        mg_collate_step_len(p, 0, 2, &mut slow_len, &mut fast_len),
        MG_STATUS_OK
    );
    let frames = vec![50u8; 8 * 40 * 40 * 3];
    let clips = [mg_clip {
        frames: frames.as_ptr(),
        num_frames: 8,
        height: 40,
        width: 40,
    }; 2];
    let mut slow = vec![f32::NAN; slow_len];
    let mut fast = vec![f32::NAN; fast_len];
    // The slow buffer is one float short: the fast one must stay untouched.
    let status = mg_collate_step(
        p,
        0,
        clips.as_ptr(),
        2,
        2,
        slow.as_mut_ptr(),
        slow_len - 1,
        fast.as_mut_ptr(),
        fast_len,
    );
    assert_eq!(status, MG_STATUS_INVALID_ARGUMENT);
    assert!(last_error().contains("slow holds"), "{}", last_error());
    assert!(fast.iter().all(|v| v.is_nan()), "fast was written");
    // An alpha above the frames is refused before anything is written, too.
    let status = mg_collate_step(
        p,
        0,
        clips.as_ptr(),
        2,
        9,
        slow.as_mut_ptr(),
        slow_len,
        fast.as_mut_ptr(),
        fast_len,
    );
    assert_eq!(status, MG_STATUS_INVALID_ARGUMENT);
    assert!(fast.iter().all(|v| v.is_nan()), "fast was written");
    let status = mg_collate_step(
        p,
        0,
        clips.as_ptr(),
        2,
        2,
        slow.as_mut_ptr(),
        slow_len,
        fast.as_mut_ptr(),
        fast_len,
    );
    assert_eq!(status, MG_STATUS_OK, "{}", last_error());
    assert!(fast.iter().chain(&slow).all(|v| v.is_finite()));
    mg_plan_free(p);
}

#[test]
fn clips_that_never_decode_are_a_data_error() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("never_decode");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let list: String = (0..4).map(|i| format!("missing{i}.mp4 {i}\n")).collect();
    std::fs::write(dir.join("train.csv"), list).unwrap();
    let (cdir, split) = (
        CString::new(dir.to_str().unwrap()).unwrap(),
        CString::new("train").unwrap(),
    );
    let mut d = ptr::null_mut();
    assert_eq!(
        mg_dataset_open_video_list(cdir.as_ptr(), split.as_ptr(), &mut d),
        MG_STATUS_OK
    );
    let p = tiny_plan(4);
    let (mut slow_len, mut fast_len) = (0usize, 0usize);
    assert_eq!(
        mg_collate_step_len(p, 0, 2, &mut slow_len, &mut fast_len),
        MG_STATUS_OK
    );
    let (mut slow, mut fast, mut labels) = (vec![0f32; slow_len], vec![0f32; fast_len], [0i64; 2]);
    let status = mg_dataset_load_step(
        d,
        p,
        0,
        2,
        slow.as_mut_ptr(),
        slow_len,
        fast.as_mut_ptr(),
        fast_len,
        labels.as_mut_ptr(),
        2,
    );
    assert_eq!(status, MG_STATUS_DATA, "{}", last_error());
    assert!(last_error().contains("in a row failed"), "{}", last_error());
    // A plan made for another dataset size is refused by the Rust API as by the C one.
    let other = tiny_plan(6);
    let status = mg_dataset_load_step(
        d,
        other,
        0,
        2,
        slow.as_mut_ptr(),
        slow_len,
        fast.as_mut_ptr(),
        fast_len,
        labels.as_mut_ptr(),
        2,
    );
    assert_eq!(status, MG_STATUS_INVALID_ARGUMENT);
    assert!(
        last_error().contains("made for 6 clips"),
        "{}",
        last_error()
    );
    mg_plan_free(other);
    mg_plan_free(p);
    mg_dataset_free(d);
}

#[test]
fn the_rust_and_c_apis_answer_alike() {
    let s = common::kinetics();
    let c = new_c_schedule();
    for epoch in [f64::NAN, -1.0, f64::INFINITY] {
        assert!(s.lr_at(epoch).is_err(), "{epoch}");
        let mut lr = 0.0;
        assert_eq!(
            mg_schedule_lr_at(c, epoch, &mut lr),
            MG_STATUS_INVALID_ARGUMENT
        );
    }
    let plan = Plan::new(&s, 240_000, 8, 0, 0).unwrap();
    let mut p = ptr::null_mut();
    assert_eq!(mg_plan_new(c, 240_000, 8, 0, 0, &mut p), MG_STATUS_OK);
    let max = s.max_epoch();
    for epoch in [0, max - 1, max, u32::MAX] {
        let rust = plan.steps_in_epoch(epoch);
        let mut n = 0u64;
        let status = mg_plan_steps_in_epoch(p, epoch, &mut n);
        match rust {
            Ok(v) => assert_eq!((status, n), (MG_STATUS_OK, v)),
            Err(multigrid::Error::OutOfRange(_)) => assert_eq!(status, MG_STATUS_OUT_OF_RANGE),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(plan.steps_in_epoch(max).is_err());
    mg_plan_free(p);
    mg_schedule_free(c);
    // The same bounds hold for a config built in Rust.
    let mut config = Config::default();
    config.multigrid.epoch_factor = 1e12;
    config.multigrid.short_cycle = true;
    assert!(Schedule::new(config).is_err());
}

fn new_c_schedule() -> *mut mg_schedule {
    let json = CString::new(common::kinetics_json_with(serde_json::json!({}))).unwrap();
    let mut s = ptr::null_mut();
    assert_eq!(mg_schedule_new(json.as_ptr(), &mut s), MG_STATUS_OK);
    s
}

#[cfg(feature = "torch")]
mod trainer {
    use super::*;

    fn tiny_trainer(name: &str) -> *mut mg_trainer {
        let root = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = std::fs::remove_dir_all(&root);
        let data = root.join("data");
        common::gen_store(&data, 8);
        let mut config = tiny_config();
        config["run"]["data_dir"] = serde_json::json!(data);
        let json = CString::new(config.to_string()).unwrap();
        let out = CString::new(root.join("out").to_str().unwrap()).unwrap();
        let mut t = ptr::null_mut();
        assert_eq!(
            mg_trainer_new(json.as_ptr(), out.as_ptr(), &mut t),
            MG_STATUS_OK,
            "{}",
            last_error()
        );
        t
    }

    struct Batch {
        slow: Vec<f32>,
        fast: Vec<f32>,
        slow_shape: [i64; 5],
        fast_shape: [i64; 5],
        labels: Vec<i64>,
    }

    fn batch(n: i64, ts: i64, tf: i64, hw: i64) -> Batch {
        let slow_shape = [n, 3, ts, hw, hw];
        let fast_shape = [n, 3, tf, hw, hw];
        Batch {
            slow: vec![0.1; slow_shape.iter().product::<i64>() as usize],
            fast: vec![0.2; fast_shape.iter().product::<i64>() as usize],
            slow_shape,
            fast_shape,
            labels: (0..n).collect(),
        }
    }

    fn step(t: *mut mg_trainer, b: &Batch, bn_groups: u32) -> mg_status {
        let mut loss = 0.0;
        mg_trainer_train_step(
            t,
            b.slow.as_ptr(),
            b.slow_shape.as_ptr(),
            b.fast.as_ptr(),
            b.fast_shape.as_ptr(),
            b.labels.as_ptr(),
            bn_groups,
            0.01,
            &mut loss,
        )
    }

    #[test]
    fn train_step_input_errors_are_invalid_argument_not_panics() {
        let t = tiny_trainer("hardening_train_step");
        // alpha 2: 8 fast frames need 4 slow ones.
        let cases = [
            (batch(2, 3, 8, 32), 1, "slow pathway has 3 frames"),
            (batch(2, 4, 7, 32), 1, "slow pathway has 4 frames"),
            // One clip of 2 frames at 16 px: one value per channel at res5.
            (batch(1, 1, 2, 16), 1, "one value per channel"),
            (batch(2, 4, 8, 32), 3, "bn_groups 3"),
        ];
        for (b, groups, want) in &cases {
            assert_eq!(step(t, b, *groups), MG_STATUS_INVALID_ARGUMENT, "{want}");
            assert!(last_error().contains(want), "{want}: {}", last_error());
        }
        let mut bad_labels = batch(2, 4, 8, 32);
        bad_labels.labels = vec![0, 12];
        assert_eq!(step(t, &bad_labels, 1), MG_STATUS_INVALID_ARGUMENT);
        assert!(last_error().contains("0..12"), "{}", last_error());
        // Shapes whose element count overflows are refused before any memory is read.
        let mut huge = batch(2, 4, 8, 32);
        huge.fast_shape = [2, 3, i64::MAX / 4, 1 << 20, 1 << 20];
        assert_eq!(step(t, &huge, 1), MG_STATUS_INVALID_ARGUMENT);
        assert!(last_error().contains("more floats"), "{}", last_error());
        // Nothing above moved the run; a good batch still trains.
        let mut next = u64::MAX;
        assert_eq!(mg_trainer_next_step(t, &mut next), MG_STATUS_OK);
        assert_eq!(next, 0);
        assert_eq!(
            step(t, &batch(2, 4, 8, 32), 1),
            MG_STATUS_OK,
            "{}",
            last_error()
        );
        mg_trainer_free(t);
    }
}

/// Fuzzing finding 1: any u32 epoch may come through the C API.
#[test]
fn eval_epoch_queries_past_the_run_answer_false() {
    let s = new_c_schedule();
    let mut b = true;
    assert_eq!(
        mg_schedule_is_eval_epoch(s, u32::MAX, &mut b),
        MG_STATUS_OK,
        "{}",
        last_error()
    );
    assert!(!b);
    mg_schedule_free(s);
}

/// Fuzzing findings 2 and 3: a label at u32::MAX (store or list) and a NUL inside a listed
/// path are data errors, not an overflow or a panic inside ffmpeg-next.
#[test]
fn labels_past_the_limit_and_nul_paths_are_data_errors() {
    use multigrid::data::dataset::Dataset;
    use multigrid::data::store::StoreWriter;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bad_labels");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("train.mgstore");
    let mut w = StoreWriter::create(&path).unwrap();
    w.add(&[1u8; 2 * 2 * 2 * 3], 2, 2, 2, u32::MAX).unwrap();
    w.finish().unwrap();
    let e = Dataset::store(&path).unwrap().num_classes().unwrap_err();
    assert!(matches!(e, multigrid::Error::Data(_)), "{e:?}");
    let repo = common::repo().join("fuzz/regressions/video_list");
    for name in ["num_classes_label_u32_max.csv", "nul_in_path_minimal.csv"] {
        std::fs::copy(repo.join(name), dir.join("list.csv")).unwrap();
        let r = Dataset::video_list(&dir, "list").and_then(|d| d.num_classes());
        assert!(matches!(r, Err(multigrid::Error::Data(_))), "{name}: {r:?}");
    }
}

/// Fuzzing findings 4 to 7: corrupt MP4s give errors (or frames) in bounded time and memory;
/// none aborts the process, loops forever or overflows.
#[cfg(feature = "video")]
#[test]
fn corrupt_mp4s_found_by_the_fuzzer_are_errors() {
    use multigrid::data::video;
    let dir = common::repo().join("fuzz/regressions/mp4");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    for path in names {
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let probed = video::probe(&p).map(|i| i.num_frames);
            let first = video::decode_range(&p, 0, 15).map(|d| d.num_frames);
            let seek = video::decode_range(&p, 100, 101).map(|d| d.num_frames);
            let _ = tx.send((probed, first, seek));
        });
        let (probed, first, seek) = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{} hangs", path.display()));
        if let Ok(n) = probed {
            assert!(n > 0, "{}: probe says 0 frames", path.display());
        }
        for r in [first, seek] {
            if let Err(e) = r {
                assert!(
                    matches!(e, multigrid::Error::Decode { .. }),
                    "{}: {e:?}",
                    path.display()
                );
            }
        }
    }
}

/// Fuzzing finding 8: a stage smaller than the short cycle's crops made a short-cycle batch
/// factor of 0 (steps of 0 clips).
#[test]
fn a_short_cycle_batch_factor_of_zero_is_a_config_error() {
    let (status, msg) = schedule_status(serde_json::json!({
        "data": {"num_frames": 8, "train_crop_size": 64},
        "multigrid": {"long_cycle_factors": [[0.125, 0.02], [1, 1]]}
    }));
    assert_eq!(status, MG_STATUS_INVALID_CONFIG, "{msg}");
    assert!(msg.contains("short_cycle_factors"), "{msg}");
}

/// Fuzzing finding (session 5): a store clip of 0 frames with a recorded frame rate went
/// through the target-fps gather, which indexed frame -1 before the collator's own checks.
#[test]
fn an_empty_store_clip_at_a_recorded_fps_is_an_error() {
    use multigrid::collate::{ClipParams, Normalize};
    use multigrid::data::dataset::Dataset;
    use multigrid::data::store::StoreWriter;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("empty_fps_clip");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("train.mgstore");
    let mut w = StoreWriter::create(&path).unwrap();
    w.add_at_fps(&[7u8; 2 * 2 * 3], 1, 2, 2, 0, Some(60.0))
        .unwrap();
    w.finish().unwrap();
    // Rewrite the clip as 0 frames of 0 bytes, with valid checksums: what the fuzzer made.
    let mut b = std::fs::read(&path).unwrap();
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let (index, index_len) = (u64_at(&b, 24) as usize, u64_at(&b, 32) as usize);
    b[index + 8..index + 16].copy_from_slice(&0u64.to_le_bytes());
    b[index + 16..index + 20].copy_from_slice(&0u32.to_le_bytes());
    b[index + 32..index + 36].copy_from_slice(&crc32fast::hash(&[]).to_le_bytes());
    let crc = crc32fast::hash(&b[index..index + index_len]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32fast::hash(&b[..48]);
    b[48..52].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    // The bytes are this test's own, so whether the store opens is fixed, not a branch to
    // allow: it must open (the extent of 0 bytes is valid) and hold the clip meant here, or
    // the gather below is never reached and the finding goes untested. A store that comes to
    // refuse empty clips at open fails here, to have this test check that refusal instead.
    let store = Dataset::store(&path).unwrap_or_else(|e| {
        panic!("the 0-frame clip must reach the gather, but the store refuses it: {e}")
    });
    match &store {
        Dataset::Store(s) => {
            let info = s.info(0).unwrap();
            assert_eq!((info.num_frames, info.len), (0, 0), "{info:?}");
            assert_eq!(info.fps(), Some(60.0), "{info:?}");
        }
        other => panic!("{other:?} is not a clip store"),
    }
    let mut out = vec![0f32; 3 * 2 * 2 * 2];
    let choose = |_, _, _| {
        ClipParams {
            stride: 1,
            short_side: 2,
            ..ClipParams::default()
        }
        .into()
    };
    let r = store.collate_clip(0, 2, 2, &Normalize::default(), 30, choose, &mut out);
    assert!(
        matches!(r, Err(multigrid::Error::InvalidArgument(_))),
        "{r:?}"
    );
}
