//! Builds the C examples as C11 and as C++ with warnings as errors, runs them, checks their
//! output, and runs them once more under AddressSanitizer (leaks included).

mod common;

use std::path::PathBuf;

use common::{compile_c as compile, repo, run_c as run};

fn out_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c_examples");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn check_schedule_output(out: &str) {
    for expected in [
        "13 stages, 358 epochs",
        "   12        3 329-358   1  32 224  0.0001   32@112 16@158 8@224",
        "    0        0   0-73    8   8 158  0.8      128@112 64@158 64@158",
        "total steps (rank 0 of 8, 240000 clips): 261582",
        "step 0: epoch 0 iter 0 phase 0 batch 128 x 8 frames x 112px, stride 2-8, bn_groups 8, lr 0.010000",
        "step past the end -> MG_STATUS_OUT_OF_RANGE",
        "bad config -> MG_STATUS_INVALID_CONFIG: mg_schedule_new: config: data.num_frames must be > 0",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

const SCHEDULE_ARGS: &[&str] = &["configs/kinetics_slowfast_8x8_r50_multigrid.json", "240000"];

#[test]
fn schedule_example_as_c11() {
    let exe = out_dir().join("schedule_c");
    compile(
        "gcc",
        &["-std=c11", "-pedantic"],
        &repo().join("examples/c/schedule.c"),
        &exe,
    );
    check_schedule_output(&run(&exe, SCHEDULE_ARGS, &[]));
}

#[test]
fn schedule_example_as_cpp() {
    let exe = out_dir().join("schedule_cpp");
    compile(
        "g++",
        &["-x", "c++", "-std=c++17"],
        &repo().join("examples/c/schedule.c"),
        &exe,
    );
    check_schedule_output(&run(&exe, SCHEDULE_ARGS, &[]));
}

#[test]
fn schedule_example_under_address_sanitizer() {
    let exe = out_dir().join("schedule_asan");
    compile(
        "gcc",
        &[
            "-std=c11",
            "-g",
            "-fsanitize=address,undefined",
            "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=all",
        ],
        &repo().join("examples/c/schedule.c"),
        &exe,
    );
    let out = run(
        &exe,
        SCHEDULE_ARGS,
        &[("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")],
    );
    check_schedule_output(&out);
}

fn check_collate_output(out: &str) {
    for expected in [
        "step 0: slow [16, 3, 2, 112, 112] fast [16, 3, 8, 112, 112] mean",
        "step 1: slow [8, 3, 2, 158, 158] fast [8, 3, 8, 158, 158] mean",
        "explicit: [1, 3, 4, 64, 64] first -1.1840",
        "crop outside -> MG_STATUS_INVALID_ARGUMENT: mg_collate_explicit: clip 0: crop 64x64 at (200, 20) is outside",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

const COLLATE_ARGS: &[&str] = &["configs/kinetics_slowfast_8x8_r50_multigrid.json"];

#[test]
fn collate_example_as_c11_and_cpp() {
    let src = repo().join("examples/c/collate.c");
    let c = out_dir().join("collate_c");
    compile("gcc", &["-std=c11", "-pedantic"], &src, &c);
    check_collate_output(&run(&c, COLLATE_ARGS, &[]));
    let cpp = out_dir().join("collate_cpp");
    compile("g++", &["-x", "c++", "-std=c++17"], &src, &cpp);
    check_collate_output(&run(&cpp, COLLATE_ARGS, &[]));
}

#[test]
fn collate_example_under_address_sanitizer() {
    let exe = out_dir().join("collate_asan");
    compile(
        "gcc",
        &[
            "-std=c11",
            "-g",
            "-fsanitize=address,undefined",
            "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=all",
        ],
        &repo().join("examples/c/collate.c"),
        &exe,
    );
    check_collate_output(&run(
        &exe,
        COLLATE_ARGS,
        &[("ASAN_OPTIONS", "detect_leaks=1")],
    ));
}

#[test]
fn train_example_as_c11_and_cpp() {
    let data = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c_train_data");
    common::gen_store(&data, 60);
    let src = repo().join("examples/c/train.c");
    for (name, compiler, args) in [
        ("train_c", "gcc", vec!["-std=c11", "-pedantic"]),
        ("train_cpp", "g++", vec!["-x", "c++", "-std=c++17"]),
    ] {
        let exe = out_dir().join(name);
        compile(compiler, &args, &src, &exe);
        let run_dir = out_dir().join(format!("{name}_run"));
        let _ = std::fs::remove_dir_all(&run_dir);
        let out = run(
            &exe,
            &[data.to_str().unwrap(), run_dir.to_str().unwrap()],
            &[],
        );
        if cfg!(feature = "torch") {
            for expected in [
                "rank 0 of 1",
                "step 4: batch 4 x 8 x 32",
                "next step: 5",
                "val: top-1",
                "over 5 clips",
                "fit -> MG_STATUS_OK after 3 callbacks: cancelled at step 8",
                "last metrics: present",
            ] {
                assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
            }
            assert!(!out.contains("not finite"), "{out}");
            assert!(run_dir.join("checkpoints").exists());
        } else {
            assert!(out.contains("built without libtorch"), "{out}");
        }
    }
}

#[test]
fn cpp_training_loop_with_the_cpp17_bindings() {
    let data = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cpp_train_data");
    common::gen_store(&data, 60);
    let exe = out_dir().join("train_loop_cpp");
    let include = format!("-I{}", repo().join("bindings/cpp").display());
    compile(
        "g++",
        &["-std=c++17", "-pedantic", &include],
        &repo().join("examples/cpp/train_loop.cpp"),
        &exe,
    );
    let run_dir = out_dir().join("train_loop_cpp_run");
    let _ = std::fs::remove_dir_all(&run_dir);
    let out = run(
        &exe,
        &[data.to_str().unwrap(), run_dir.to_str().unwrap(), "4"],
        &[],
    );
    assert!(out.contains("3 stages, 12 steps over 50 clips"), "{out}");
    assert!(
        out.contains(
            "past the end -> MG_STATUS_OUT_OF_RANGE: mg_plan_step: step 12 is past the end"
        ),
        "{out}"
    );
    if cfg!(feature = "torch") {
        for expected in [
            "rank 0 of 1",
            "step 0: 32 x 4 x 16px, bn_groups 2, lr 0.2000",
            "step 3: 16 x 4 x 23px",
            "next step: 4",
            "val: top-1",
            "fit cancelled: yes after 2 callbacks, 6 steps, preempted by signal 0",
            "re-entrant call -> MG_STATUS_BUSY: mg_trainer_next_step: the trainer is inside \
             mg_trainer_fit",
            "next step after it: 7",
        ] {
            assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
        }
        assert!(!out.contains("not finite"), "{out}");
    } else {
        assert!(out.contains("built without libtorch"), "{out}");
    }
}
