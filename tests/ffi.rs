//! The C boundary called directly from Rust: NULLs, bad input, ranges and buffers give a status
//! and a message, never a crash or an out-of-bounds write.

mod common;

use std::ffi::{c_char, CStr, CString};
use std::ptr;

use multigrid::ffi::*;

fn last_error() -> String {
    let mut buf = vec![0 as c_char; 1024];
    let n = mg_last_error_message(buf.as_mut_ptr(), buf.len());
    let s = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(n, s.len());
    s
}

fn kinetics_json() -> CString {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/kinetics_slowfast_8x8_r50_multigrid.json"
    );
    CString::new(std::fs::read_to_string(path).unwrap()).unwrap()
}

fn new_schedule() -> *mut mg_schedule {
    let mut s = ptr::null_mut();
    assert_eq!(
        mg_schedule_new(kinetics_json().as_ptr(), &mut s),
        MG_STATUS_OK
    );
    assert!(!s.is_null());
    s
}

#[test]
fn schedule_queries() {
    let s = new_schedule();
    let mut n = 0usize;
    assert_eq!(mg_schedule_num_stages(s, &mut n), MG_STATUS_OK);
    assert_eq!(n, 13);
    let mut stage = mg_stage::default();
    assert_eq!(mg_schedule_stage(s, 1, &mut stage), MG_STATUS_OK);
    assert_eq!(
        (
            stage.lr_stage,
            stage.batch_factor,
            stage.num_frames,
            stage.crop_size,
            stage.start_epoch,
            stage.end_epoch
        ),
        (0, 4, 16, 158, 73, 110)
    );
    assert_eq!(stage.base_batch_size, 256);
    assert_eq!(stage.num_short_cycle_phases, 3);
    assert_eq!(stage.short_cycle_batch_factors, [2, 1, 1]);
    assert_eq!(stage.short_cycle_crops, [112, 158, 158]);
    assert_eq!(stage.sampling_rate_max, 4);
    let mut max = 0u32;
    assert_eq!(mg_schedule_max_epoch(s, &mut max), MG_STATUS_OK);
    assert_eq!(max, 358);
    let mut lr = 0.0;
    assert_eq!(mg_schedule_lr_at(s, 343.5, &mut lr), MG_STATUS_OK);
    assert!((lr - 1e-4).abs() < 1e-15);
    let mut ev = false;
    assert_eq!(mg_schedule_is_eval_epoch(s, 72, &mut ev), MG_STATUS_OK);
    assert!(ev);
    mg_schedule_free(s);
}

#[test]
fn outputs_untouched_on_failure() {
    let s = new_schedule();
    let mut stage = mg_stage {
        lr_stage: 77,
        ..Default::default()
    };
    assert_eq!(mg_schedule_stage(s, 13, &mut stage), MG_STATUS_OUT_OF_RANGE);
    assert_eq!(stage.lr_stage, 77);
    assert!(last_error().contains("stage index 13"), "{}", last_error());
    let mut lr = -1.0;
    assert_eq!(
        mg_schedule_lr_at(s, f64::NAN, &mut lr),
        MG_STATUS_INVALID_ARGUMENT
    );
    assert_eq!(
        mg_schedule_lr_at(s, -1.0, &mut lr),
        MG_STATUS_INVALID_ARGUMENT
    );
    assert_eq!(lr, -1.0);
    let mut out = ptr::null_mut();
    let bad = CString::new("{\"solver\": {\"steps\": [0, 5, 3]}}").unwrap();
    assert_eq!(
        mg_schedule_new(bad.as_ptr(), &mut out),
        MG_STATUS_INVALID_CONFIG
    );
    assert!(out.is_null());
    assert!(last_error().contains("solver.steps"), "{}", last_error());
    mg_schedule_free(s);
}

#[test]
fn null_arguments() {
    let s = new_schedule();
    let mut out = ptr::null_mut();
    assert_eq!(
        mg_schedule_new(ptr::null(), &mut out),
        MG_STATUS_NULL_ARGUMENT
    );
    assert!(last_error().contains("config_json"));
    assert_eq!(
        mg_schedule_new(kinetics_json().as_ptr(), ptr::null_mut()),
        MG_STATUS_NULL_ARGUMENT
    );
    assert!(last_error().contains("`out`"));
    assert_eq!(
        mg_schedule_num_stages(ptr::null(), &mut 0),
        MG_STATUS_NULL_ARGUMENT
    );
    assert_eq!(
        mg_schedule_num_stages(s, ptr::null_mut()),
        MG_STATUS_NULL_ARGUMENT
    );
    assert_eq!(
        mg_schedule_stage(ptr::null(), 0, &mut mg_stage::default()),
        MG_STATUS_NULL_ARGUMENT
    );
    assert_eq!(
        mg_schedule_max_epoch(s, ptr::null_mut()),
        MG_STATUS_NULL_ARGUMENT
    );
    assert_eq!(
        mg_schedule_lr_at(ptr::null(), 0.0, &mut 0.0),
        MG_STATUS_NULL_ARGUMENT
    );
    assert_eq!(
        mg_schedule_is_eval_epoch(s, 0, ptr::null_mut()),
        MG_STATUS_NULL_ARGUMENT
    );
    let mut p = ptr::null_mut();
    assert_eq!(
        mg_plan_new(ptr::null(), 10, 1, 0, 0, &mut p),
        MG_STATUS_NULL_ARGUMENT
    );
    assert_eq!(
        mg_plan_new(s, 1000, 8, 0, 0, ptr::null_mut()),
        MG_STATUS_NULL_ARGUMENT
    );
    assert_eq!(
        mg_plan_total_steps(ptr::null(), &mut 0),
        MG_STATUS_NULL_ARGUMENT
    );
    assert_eq!(
        mg_plan_step(ptr::null(), 0, &mut mg_step::default()),
        MG_STATUS_NULL_ARGUMENT
    );
    assert_eq!(
        mg_plan_step_indices(ptr::null(), 0, ptr::null_mut(), 0, &mut 0),
        MG_STATUS_NULL_ARGUMENT
    );
    // Frees accept NULL.
    mg_schedule_free(ptr::null_mut());
    mg_plan_free(ptr::null_mut());
    mg_schedule_free(s);
}

#[test]
fn not_utf8_config() {
    let bytes = CString::new(vec![b'{', 0xff, b'}']).unwrap();
    let mut out = ptr::null_mut();
    assert_eq!(
        mg_schedule_new(bytes.as_ptr(), &mut out),
        MG_STATUS_INVALID_ARGUMENT
    );
    assert!(last_error().contains("UTF-8"));
}

#[test]
fn plan_queries_and_buffers() {
    let s = new_schedule();
    let mut p = ptr::null_mut();
    assert_eq!(mg_plan_new(s, 240_000, 8, 0, 0, &mut p), MG_STATUS_OK);
    // The plan outlives its schedule.
    mg_schedule_free(s);
    let mut total = 0u64;
    assert_eq!(mg_plan_total_steps(p, &mut total), MG_STATUS_OK);
    assert_eq!(total, 261_582);
    let mut per_epoch = 0u64;
    assert_eq!(mg_plan_steps_in_epoch(p, 0, &mut per_epoch), MG_STATUS_OK);
    assert_eq!(per_epoch, 351);
    assert_eq!(
        mg_plan_steps_in_epoch(p, 358, &mut per_epoch),
        MG_STATUS_OUT_OF_RANGE
    );
    let mut step = mg_step::default();
    assert_eq!(mg_plan_step(p, 0, &mut step), MG_STATUS_OK);
    assert_eq!(
        (
            step.batch_size,
            step.crop_size,
            step.num_frames,
            step.bn_groups
        ),
        (128, 112, 8, 8)
    );
    assert_eq!(mg_plan_step(p, total, &mut step), MG_STATUS_OUT_OF_RANGE);
    assert!(last_error().contains("past the end"));

    // Size query, too-small buffer, exact buffer.
    let mut len = 0usize;
    assert_eq!(
        mg_plan_step_indices(p, 0, ptr::null_mut(), 0, &mut len),
        MG_STATUS_BUFFER_TOO_SMALL
    );
    assert_eq!(len, 128);
    let mut small = vec![u64::MAX; 130];
    assert_eq!(
        mg_plan_step_indices(p, 0, small.as_mut_ptr(), 100, &mut len),
        MG_STATUS_BUFFER_TOO_SMALL
    );
    assert!(
        small.iter().all(|&v| v == u64::MAX),
        "nothing written on failure"
    );
    assert_eq!(
        mg_plan_step_indices(p, 0, small.as_mut_ptr(), 130, &mut len),
        MG_STATUS_OK
    );
    assert_eq!(len, 128);
    assert!(small[..128].iter().all(|&v| v < 240_000));
    assert_eq!(small[128], u64::MAX, "nothing written past the count");
    assert_eq!(
        mg_plan_step_indices(p, 0, ptr::null_mut(), 128, &mut len),
        MG_STATUS_NULL_ARGUMENT
    );
    assert_eq!(
        mg_plan_step_indices(p, total, small.as_mut_ptr(), 130, &mut len),
        MG_STATUS_OUT_OF_RANGE
    );

    let mut bad = ptr::null_mut();
    let s = new_schedule();
    assert_eq!(
        mg_plan_new(s, 1000, 8, 8, 0, &mut bad),
        MG_STATUS_INVALID_ARGUMENT
    );
    assert!(last_error().contains("rank 8"));
    assert_eq!(
        mg_plan_new(s, 1000, 3, 0, 0, &mut bad),
        MG_STATUS_INVALID_ARGUMENT
    );
    assert!(bad.is_null());
    mg_schedule_free(s);
    mg_plan_free(p);
}

#[test]
fn last_error_copy_out_is_snprintf_like() {
    let mut out = ptr::null_mut();
    assert_eq!(
        mg_schedule_new(ptr::null(), &mut out),
        MG_STATUS_NULL_ARGUMENT
    );
    let full = mg_last_error_message(ptr::null_mut(), 0);
    assert!(full > 10);
    let mut buf = [b'x' as c_char; 8];
    assert_eq!(mg_last_error_message(buf.as_mut_ptr(), 8), full);
    assert_eq!(buf[7], 0, "truncated and NUL-terminated");
    let got = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
    assert_eq!(got, &last_error()[..7]);
    let mut one = [b'x' as c_char; 1];
    assert_eq!(mg_last_error_message(one.as_mut_ptr(), 1), full);
    assert_eq!(one[0], 0);
    // Errors are per thread: a fresh thread has none.
    let n = std::thread::spawn(|| mg_last_error_message(ptr::null_mut(), 0))
        .join()
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn status_names_and_version() {
    let name = |s| {
        unsafe { CStr::from_ptr(mg_status_str(s)) }
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(name(MG_STATUS_OK), "MG_STATUS_OK");
    assert_eq!(
        name(MG_STATUS_BUFFER_TOO_SMALL),
        "MG_STATUS_BUFFER_TOO_SMALL"
    );
    assert_eq!(name(MG_STATUS_PANIC), "MG_STATUS_PANIC");
    assert_eq!(name(12345), "unknown status");
    assert_eq!(name(-1), "unknown status");
    let v = unsafe { CStr::from_ptr(mg_version()) }.to_str().unwrap();
    assert!(
        v.starts_with(&format!("multigrid {}", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    if cfg!(feature = "torch") {
        assert!(v.contains("libtorch 2.11.0"), "{v}");
    } else {
        assert!(v.contains("libtorch none"), "{v}");
    }
}

#[test]
fn concurrent_queries_on_one_plan() {
    let s = new_schedule();
    let mut p = ptr::null_mut();
    assert_eq!(mg_plan_new(s, 50_000, 8, 1, 3, &mut p), MG_STATUS_OK);
    mg_schedule_free(s);
    let addr = p as usize;
    let results: Vec<Vec<u64>> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let p = addr as *const mg_plan;
                let mut buf = vec![0u64; 128];
                let mut len = 0;
                let mut all = Vec::new();
                for k in (0..2000).step_by(97) {
                    assert_eq!(
                        mg_plan_step_indices(p, k, buf.as_mut_ptr(), 128, &mut len),
                        MG_STATUS_OK
                    );
                    all.extend_from_slice(&buf[..len]);
                }
                all
            })
        })
        .map(|h| h.join().unwrap())
        .collect();
    assert!(results.windows(2).all(|w| w[0] == w[1]));
    mg_plan_free(p);
}

#[test]
fn collate_boundary_checks() {
    let frames = vec![100u8; 6 * 40 * 50 * 3];
    let clip = mg_clip {
        frames: frames.as_ptr(),
        num_frames: 6,
        height: 40,
        width: 50,
    };
    let params = mg_clip_params {
        start_frame: 0,
        stride: 1,
        short_side: 32,
        crop_x: 0,
        crop_y: 0,
        flip: true,
    };
    let (mean, std) = ([0.5f32; 3], [0.25f32; 3]);
    let len = 3 * 2 * 32 * 32;
    let mut out = vec![0f32; len];
    let call =
        |clips: *const mg_clip, params: *const mg_clip_params, out: *mut f32, out_len: usize| {
            mg_collate_explicit(
                clips,
                params,
                1,
                2,
                32,
                mean.as_ptr(),
                std.as_ptr(),
                out,
                out_len,
            )
        };
    assert_eq!(call(&clip, &params, out.as_mut_ptr(), len), MG_STATUS_OK);
    // A constant frame normalises to (100/255 - 0.5) / 0.25 everywhere.
    let want = (100.0 / 255.0 - 0.5) / 0.25;
    assert!(out.iter().all(|v| (v - want).abs() < 1e-5));
    assert_eq!(
        call(ptr::null(), &params, out.as_mut_ptr(), len),
        MG_STATUS_NULL_ARGUMENT
    );
    assert_eq!(
        call(&clip, ptr::null(), out.as_mut_ptr(), len),
        MG_STATUS_NULL_ARGUMENT
    );
    assert_eq!(
        call(&clip, &params, ptr::null_mut(), len),
        MG_STATUS_NULL_ARGUMENT
    );
    assert_eq!(
        call(&clip, &params, out.as_mut_ptr(), len - 1),
        MG_STATUS_INVALID_ARGUMENT
    );
    assert!(last_error().contains("output holds"), "{}", last_error());
    let null_frames = mg_clip {
        frames: ptr::null(),
        ..clip
    };
    assert_eq!(
        call(&null_frames, &params, out.as_mut_ptr(), len),
        MG_STATUS_INVALID_ARGUMENT
    );
    let zero_std = [0.25f32, 0.0, 0.25];
    assert_eq!(
        mg_collate_explicit(
            &clip,
            &params,
            1,
            2,
            32,
            mean.as_ptr(),
            zero_std.as_ptr(),
            out.as_mut_ptr(),
            len
        ),
        MG_STATUS_INVALID_ARGUMENT
    );
    assert!(last_error().contains("std[1]"));

    // A plan step: lengths, the batch size check, the slow-pathway rules.
    let s = new_schedule();
    let mut p = ptr::null_mut();
    assert_eq!(mg_plan_new(s, 240_000, 64, 0, 0, &mut p), MG_STATUS_OK);
    mg_schedule_free(s);
    let (mut slow_len, mut fast_len) = (0usize, 0usize);
    assert_eq!(
        mg_collate_step_len(p, 0, 4, &mut slow_len, &mut fast_len),
        MG_STATUS_OK
    );
    assert_eq!(
        (slow_len, fast_len),
        (16 * 3 * 2 * 112 * 112, 16 * 3 * 8 * 112 * 112)
    );
    let big = vec![7u8; 40 * 128 * 160 * 3];
    let clips: Vec<mg_clip> = (0..16)
        .map(|_| mg_clip {
            frames: big.as_ptr(),
            num_frames: 40,
            height: 128,
            width: 160,
        })
        .collect();
    let mut slow = vec![0f32; slow_len];
    let mut fast = vec![0f32; fast_len];
    assert_eq!(
        mg_collate_step(
            p,
            0,
            clips.as_ptr(),
            16,
            4,
            slow.as_mut_ptr(),
            slow_len,
            fast.as_mut_ptr(),
            fast_len
        ),
        MG_STATUS_OK
    );
    let want = (7.0 / 255.0 - 0.45) / 0.225;
    assert!(fast.iter().chain(&slow).all(|v| (v - want).abs() < 1e-5));
    assert_eq!(
        mg_collate_step(
            p,
            0,
            clips.as_ptr(),
            15,
            4,
            slow.as_mut_ptr(),
            slow_len,
            fast.as_mut_ptr(),
            fast_len
        ),
        MG_STATUS_INVALID_ARGUMENT
    );
    assert!(
        last_error().contains("16 dataset indices but 15 clips"),
        "{}",
        last_error()
    );
    assert_eq!(
        mg_collate_step(
            p,
            0,
            clips.as_ptr(),
            16,
            4,
            slow.as_mut_ptr(),
            slow_len - 1,
            fast.as_mut_ptr(),
            fast_len
        ),
        MG_STATUS_INVALID_ARGUMENT
    );
    assert_eq!(
        mg_collate_step(
            p,
            0,
            clips.as_ptr(),
            16,
            0,
            slow.as_mut_ptr(),
            slow_len,
            fast.as_mut_ptr(),
            fast_len
        ),
        MG_STATUS_INVALID_ARGUMENT
    );
    assert_eq!(
        mg_collate_step(
            p,
            0,
            clips.as_ptr(),
            16,
            0,
            ptr::null_mut(),
            0,
            fast.as_mut_ptr(),
            fast_len
        ),
        MG_STATUS_OK
    );
    assert_eq!(
        mg_collate_step_len(p, u64::MAX, 4, &mut slow_len, &mut fast_len),
        MG_STATUS_OUT_OF_RANGE
    );
    mg_plan_free(p);
}

#[test]
fn dist_options_default_writes_the_callers_size() {
    let ours = std::mem::size_of::<mg_dist_options>();
    let mut o = mg_dist_options {
        rank: 7,
        ..Default::default()
    };
    for size in [0, 8, ours - 1, 4097] {
        assert_eq!(
            mg_dist_options_default(&mut o, size),
            MG_STATUS_INVALID_ARGUMENT
        );
        assert!(
            last_error().contains(&format!("struct_size is {size}")),
            "{}",
            last_error()
        );
    }
    assert_eq!(o.rank, 7, "nothing written on failure");
    assert_eq!(
        mg_dist_options_default(ptr::null_mut(), ours),
        MG_STATUS_NULL_ARGUMENT
    );
    assert_eq!(mg_dist_options_default(&mut o, ours), MG_STATUS_OK);
    assert_eq!((o.struct_size, o.rank), (ours, -1));

    // A newer header's struct: the known part gets the defaults, the rest zeros.
    #[repr(C)]
    struct Newer {
        known: mg_dist_options,
        later: [u64; 3],
    }
    let mut n = Newer {
        known: mg_dist_options::default(),
        later: [u64::MAX; 3],
    };
    let size = std::mem::size_of::<Newer>();
    assert_eq!(mg_dist_options_default(&mut n.known, size), MG_STATUS_OK);
    assert_eq!((n.known.struct_size, n.known.world_size), (size, -1));
    assert_eq!(n.later, [0; 3]);
}

/// The trainer through its C API, in one test: a preemption notice is process-wide, and a
/// second fit running meanwhile in this binary would take it for its own.
#[cfg(feature = "torch")]
mod trainer {
    use super::*;
    use std::ffi::c_void;
    use std::sync::mpsc;

    fn config(data: &std::path::Path) -> CString {
        let json = serde_json::json!({
            "data": {"num_frames": 8, "sampling_rate": 1, "train_jitter_scales": [34, 40],
                     "train_crop_size": 32, "test_crop_size": 32},
            "train": {"batch_size": 2},
            "solver": {"base_lr": 0.02, "lrs": [1], "steps": [0], "max_epoch": 2},
            "model": {"depth": 18, "width_per_group": 8, "alpha": 2, "num_classes": 12},
            "run": {"device": "cpu", "data_dir": data, "precise_bn_batches": 1,
                    "test_num_temporal_views": 1, "test_num_spatial_crops": 1}
        });
        CString::new(json.to_string()).unwrap()
    }

    fn summary() -> mg_summary {
        mg_summary {
            struct_size: std::mem::size_of::<mg_summary>(),
            ..Default::default()
        }
    }

    fn next_step(t: *const mg_trainer) -> u64 {
        let mut s = u64::MAX;
        assert_eq!(
            mg_trainer_next_step(t, &mut s),
            MG_STATUS_OK,
            "{}",
            last_error()
        );
        s
    }

    extern "C" fn stop(_: *mut c_void, _: *const mg_progress) -> i32 {
        1
    }

    /// Takes the trainer back from fit: every call is refused, and what it said is recorded.
    extern "C" fn reenter(user: *mut c_void, _: *const mg_progress) -> i32 {
        let (t, seen) = unsafe { &mut *(user as *mut (*mut mg_trainer, Vec<(mg_status, String)>)) };
        let mut step = 0;
        seen.push((mg_trainer_next_step(*t, &mut step), last_error()));
        seen.push((mg_trainer_save(*t), last_error()));
        let mut s = summary();
        seen.push((
            mg_trainer_fit(*t, None, ptr::null_mut(), &mut s),
            last_error(),
        ));
        assert_eq!(mg_trainer_last_metrics(*t, ptr::null_mut(), 0), 0);
        seen.push((MG_STATUS_BUSY, last_error()));
        mg_trainer_free(*t);
        seen.push((MG_STATUS_BUSY, last_error()));
        1
    }

    /// Asks for a preemption, as a SIGUSR1 handler would, from the first step's callback.
    extern "C" fn preempt(_: *mut c_void, _: *const mg_progress) -> i32 {
        mg_request_preemption(libc::SIGUSR1);
        0
    }

    /// Holds fit inside its callback until the test thread has tried the trainer.
    extern "C" fn hold(user: *mut c_void, _: *const mg_progress) -> i32 {
        let (inside, done) = unsafe { &*(user as *const (mpsc::Sender<()>, mpsc::Receiver<()>)) };
        inside.send(()).unwrap();
        done.recv().unwrap();
        1
    }

    #[test]
    fn fit_summary_reentry_and_threads() {
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ffi_trainer");
        let data = dir.join("data");
        common::gen_store(&data, 8);
        let out = CString::new(dir.join("run").to_str().unwrap()).unwrap();
        let _ = std::fs::remove_dir_all(dir.join("run"));
        let mut t = ptr::null_mut();
        let cfg = config(&data);
        assert_eq!(
            mg_trainer_new(cfg.as_ptr(), out.as_ptr(), &mut t),
            MG_STATUS_OK,
            "{}",
            last_error()
        );

        // A stop the callback asks for is a success, with the summary written.
        let mut s = summary();
        assert_eq!(
            mg_trainer_fit(t, Some(stop), ptr::null_mut(), &mut s),
            MG_STATUS_OK
        );
        assert!(s.cancelled && s.preempted == 0 && s.steps == 1, "{s:?}");
        assert_eq!(s.struct_size, std::mem::size_of::<mg_summary>());
        assert!(s.test_top1.is_nan(), "no final test after a stop");

        // A summary without its size is refused before training.
        let mut bad = mg_summary {
            steps: 77,
            ..Default::default()
        };
        assert_eq!(
            mg_trainer_fit(t, Some(stop), ptr::null_mut(), &mut bad),
            MG_STATUS_INVALID_ARGUMENT
        );
        assert!(
            last_error().contains("out->struct_size is 0"),
            "{}",
            last_error()
        );
        assert_eq!((bad.steps, next_step(t)), (77, 1));

        // A preemption notice stops the run as a success too, and names its signal.
        let mut s = summary();
        assert_eq!(
            mg_trainer_fit(t, Some(preempt), ptr::null_mut(), &mut s),
            MG_STATUS_OK
        );
        assert!(
            s.cancelled && s.preempted == libc::SIGUSR1 && s.steps == 2,
            "{s:?}"
        );
        assert_eq!(
            multigrid::distributed::signals::pending(),
            None,
            "the notice was taken"
        );

        // The callback calling back into its trainer: refused, the trainer intact.
        let mut ctx = (t, Vec::<(mg_status, String)>::new());
        let mut s = summary();
        let user = &mut ctx as *mut _ as *mut c_void;
        assert_eq!(mg_trainer_fit(t, Some(reenter), user, &mut s), MG_STATUS_OK);
        let names = [
            "mg_trainer_next_step",
            "mg_trainer_save",
            "mg_trainer_fit",
            "mg_trainer_last_metrics",
            "mg_trainer_free",
        ];
        assert_eq!(ctx.1.len(), names.len());
        for ((status, msg), name) in ctx.1.iter().zip(names) {
            assert_eq!(*status, MG_STATUS_BUSY, "{msg}");
            assert!(
                msg.starts_with(&format!("{name}: the trainer is inside mg_trainer_fit")),
                "{msg}"
            );
        }
        assert_eq!(next_step(t), 3);

        // Two threads: a call that changes the trainer, or reads it, while fit runs on
        // another thread is refused; queries alone may overlap.
        let (inside_tx, inside_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let addr = t as usize;
        let fit = std::thread::spawn(move || {
            let ctx = (inside_tx, done_rx);
            let mut s = summary();
            let user = &ctx as *const _ as *mut c_void;
            mg_trainer_fit(addr as *mut mg_trainer, Some(hold), user, &mut s)
        });
        inside_rx.recv().unwrap();
        assert_eq!(mg_trainer_save(t), MG_STATUS_BUSY);
        let (mut rank, mut world) = (9, 9);
        assert_eq!(mg_trainer_rank(t, &mut rank, &mut world), MG_STATUS_BUSY);
        assert!(
            last_error().contains("inside mg_trainer_fit"),
            "{}",
            last_error()
        );
        done_tx.send(()).unwrap();
        assert_eq!(fit.join().unwrap(), MG_STATUS_OK);
        let readers: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    let t = addr as *const mg_trainer;
                    (0..200).all(|_| {
                        let (mut r, mut w) = (9, 9);
                        mg_trainer_rank(t, &mut r, &mut w) == MG_STATUS_OK && (r, w) == (0, 1)
                    })
                })
            })
            .collect();
        assert!(readers.into_iter().all(|h| h.join().unwrap()));
        assert_eq!(next_step(t), 4);

        // A newer header's summary: written up to this library's size, which struct_size
        // reports; the field this library does not know is left alone.
        #[repr(C)]
        struct Newer {
            known: mg_summary,
            later: u64,
        }
        let mut n = Newer {
            known: mg_summary {
                struct_size: std::mem::size_of::<Newer>(),
                ..Default::default()
            },
            later: 0x5a5a,
        };
        assert_eq!(
            mg_trainer_fit(t, Some(stop), ptr::null_mut(), &mut n.known),
            MG_STATUS_OK
        );
        assert_eq!(n.known.struct_size, std::mem::size_of::<mg_summary>());
        assert!(n.known.cancelled && n.later == 0x5a5a);
        mg_trainer_free(t);
    }
}
