//! The `multigrid` command line: the plan table and JSON, and errors on stderr.

mod common;

use std::process::Command;

use common::{config_path, repo};

fn multigrid(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_multigrid"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

#[test]
fn plan_json_has_the_documented_shape() {
    let path = config_path("kinetics_slowfast_8x8_r50_multigrid.json");
    let out = multigrid(&[
        "plan",
        "--config",
        path.to_str().unwrap(),
        "--dataset-size",
        "240000",
        "--world-size",
        "8",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stages = v["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 13);
    for key in [
        "lr_stage",
        "batch_factor",
        "num_frames",
        "crop_size",
        "end_epoch",
    ] {
        assert!(stages.iter().all(|s| s[key].is_u64()), "{key}");
    }
    let ends: Vec<u64> = stages
        .iter()
        .map(|s| s["end_epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ends,
        [73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 358]
    );
    assert_eq!(v["solver"]["max_epoch"], 358);
    assert_eq!(v["solver"]["steps"][13], 343);
    assert_eq!(v["solver"]["lrs"].as_array().unwrap().len(), 14);
    assert_eq!(
        stages[0]["short_cycle_batch_sizes"],
        serde_json::json!([128, 64, 64])
    );
    assert_eq!(stages[0]["eval_epochs"], serde_json::json!([22, 47, 72]));
    assert_eq!(v["total_steps"], 261_582);
    assert_eq!(v["baseline"]["total_steps"], 896_250);
}

#[test]
fn plan_table_is_readable() {
    let path = config_path("kinetics_slowfast_8x8_r50_multigrid.json");
    let out = multigrid(&[
        "plan",
        "--config",
        path.to_str().unwrap(),
        "--dataset-size",
        "240000",
        "--world-size",
        "8",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("128,64,64"), "{text}");
    assert!(text.contains("22,47,72"), "{text}");
    assert!(
        text.contains("steps: 261582 multigrid vs 896250 baseline (3.43x fewer)"),
        "{text}"
    );
}

#[test]
fn errors_go_to_stderr_with_a_failing_exit() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let bad = dir.join("bad_config.json");
    std::fs::write(&bad, r#"{"multigrid": {"epoch_factr": 2}}"#).unwrap();
    let out = multigrid(&["plan", "--config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("multigrid.epoch_factr") && err.contains("bad_config.json"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let broken = dir.join("broken.json");
    std::fs::write(&broken, "{\"data\": {").unwrap();
    let out = multigrid(&["plan", "--config", broken.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));

    let out = multigrid(&["plan", "--config", "/nonexistent.json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.json"));

    let path = config_path("kinetics_slowfast_8x8_r50_multigrid.json");
    let out = multigrid(&[
        "plan",
        "--config",
        path.to_str().unwrap(),
        "--world-size",
        "3",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("world-size"));
}

#[test]
fn default_config_round_trips() {
    let out = multigrid(&["config"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed = multigrid::Config::from_json(&text).unwrap();
    assert_eq!(parsed, multigrid::Config::default());
}

/// `--set SECTION.KEY=VALUE` reaches the config and its checks: an unknown key is named, a bad
/// value is refused with the rule it breaks, and bf16 on the CPU says it needs CUDA.
#[cfg(feature = "torch")]
#[test]
fn train_set_overrides_are_checked() {
    let out_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli_set");
    let run_with = |config: &str, set: &str| {
        let config = config_path(config);
        let out = multigrid(&[
            "train",
            "--config",
            config.to_str().unwrap(),
            "--output-dir",
            out_dir.to_str().unwrap(),
            "--device",
            "cpu",
            "--data",
            "/nonexistent/multigrid-data",
            "--set",
            set,
        ]);
        assert!(!out.status.success(), "--set {set} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let run = |set: &str| run_with("synthetic_slowfast_tiny.json", set);
    let e = run("solver.base_lrr=0.2");
    assert!(e.contains("solver") && e.contains("base_lrr"), "{e}");
    let e = run("SOLVER.MAX_EPOCH=0");
    assert!(e.contains("solver.max_epoch"), "{e}");
    let e = run("nosuch.key=1");
    assert!(e.contains("no config section \"nosuch\""), "{e}");
    let e = run("run.precision=bf16");
    assert!(e.contains("needs a CUDA device"), "{e}");
    let e = run("run.precision=fp8");
    assert!(
        e.contains("run.precision: must be auto, fp32, bf16 or fp16, got \"fp8\""),
        "{e}"
    );
    // The multigrid twin with T0 16 and long-cycle factor 0.375: stage 0 trains at six frames,
    // which alpha 4 does not divide; refused before any data is read.
    let e = run_with(
        "synthetic_slowfast_tiny_multigrid.json",
        "multigrid.long_cycle_factors=[[0.375, 1.0], [1, 1]]",
    );
    assert!(
        e.contains("stage 0 of the schedule uses 6 frames, which model.alpha 4 does not divide"),
        "{e}"
    );
}

/// `demo` and `bench speedup` empty their --out before training (a run left there would be
/// resumed), but only of what they write: a user's file there is an error naming it, found
/// before the minutes of data generation, and the file is left as it was.
#[cfg(feature = "torch")]
#[test]
fn demo_and_speedup_refuse_an_output_directory_they_did_not_write() {
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli_foreign_out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("baseline")).unwrap();
    std::fs::write(out.join("thesis.tex"), "precious").unwrap();
    let data = out.join("no-data-yet");
    for args in [
        vec!["demo", "--out"],
        vec!["bench", "speedup", "--seeds", "1", "--out"],
    ] {
        let mut a = args.clone();
        a.push(out.to_str().unwrap());
        a.extend(["--data", data.to_str().unwrap()]);
        let r = multigrid(&a);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?} accepted it");
        assert!(err.contains("which this command did not write"), "{err}");
        assert_eq!(
            std::fs::read_to_string(out.join("thesis.tex")).unwrap(),
            "precious"
        );
        assert!(!data.exists(), "{args:?} generated data first");
    }
}

/// PySlowFast's YAML and trailing KEY VALUE options through the command line: `config
/// --from-yaml` prints what they map to; `train` takes them as PySlowFast's run_net does, and
/// refuses KEY VALUE options after one of our JSON configs.
#[test]
fn pyslowfast_yaml_and_options_on_the_command_line() {
    let yaml = "tests/fixtures/pyslowfast_config/Kinetics_SLOWFAST_8x8_R50_stepwise_multigrid.yaml";
    let out = multigrid(&["config", "--from-yaml", yaml, "TRAIN.BATCH_SIZE", "16"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["train"]["batch_size"], 16);
    assert_eq!(c["multigrid"]["long_cycle"], true);

    let out = multigrid(&["config", "--from-yaml", yaml, "SOLVER.NOPE", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SOLVER.NOPE"), "{err}");

    // `train` exists in the libtorch build only.
    if !cfg!(feature = "torch") {
        return;
    }
    let json = config_path("synthetic_slowfast_tiny_multigrid.json");
    let tmp = std::env::temp_dir().join(format!("mg-cli-opts-{}", std::process::id()));
    let out = multigrid(&[
        "train",
        "--config",
        json.to_str().unwrap(),
        "--output-dir",
        tmp.to_str().unwrap(),
        "SOLVER.BASE_LR",
        "0.1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("use --set SECTION.KEY=VALUE"), "{err}");
    assert!(!tmp.exists(), "nothing written for a refused command line");
}
