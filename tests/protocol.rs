//! PySlowFast's training protocol around the network, end to end on a tiny SlowFast: where
//! precise BN runs and at which shape, what validation scores, and clips that fail to load.
#![cfg(feature = "torch")]

mod common;

use std::path::Path;

use common::{fit_log, of_type, scratch};
use serde_json::{json, Value};

/// A multigrid run of 2 epochs (4 in all with the epoch factor) on `data`: evaluation every
/// other epoch, a checkpoint every epoch.
fn config(data: &Path, patch: Value) -> multigrid::Config {
    let mut v = json!({
        "data": {"num_frames": 8, "sampling_rate": 1, "train_jitter_scales": [34, 40], "train_crop_size": 32, "test_crop_size": 32},
        "train": {"batch_size": 2, "checkpoint_period": 1, "eval_period": 2},
        "solver": {"base_lr": 0.02, "lr_policy": "steps_with_relative_lrs", "lrs": [1, 0.1], "steps": [0, 1], "max_epoch": 2},
        "multigrid": {"long_cycle": true, "short_cycle": true, "long_cycle_factors": [[0.5, std::f64::consts::FRAC_1_SQRT_2], [1, 1]]},
        "model": {"depth": 18, "width_per_group": 8, "alpha": 2, "num_classes": 12},
        "run": {"device": "cpu", "data_dir": data, "precise_bn_batches": 2, "test_num_temporal_views": 1,
                "test_num_spatial_crops": 1, "log_period": 1}
    });
    common::merge(&mut v, patch);
    serde_json::from_value(v).unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

fn shape(v: &Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(u).collect()
}

/// PySlowFast computes precise BN before every checkpoint and evaluation (train_net.py), at the
/// shape it will serve here: validation's (`train`: the stage's training shape), and the
/// test's only where that differs. Batches are capped at what the split holds.
#[test]
fn precise_bn_serves_each_evaluation_and_checkpoint_once() {
    let root = scratch("protocol_precise_bn");
    let data = root.join("data");
    common::gen_store(&data, 40);
    let log = fit_log(
        config(&data, json!({"run": {"precise_bn_batches": 1000}})),
        &root.join("same"),
    );
    let train = of_type(&log, "train");
    let precise = of_type(&log, "precise_bn");
    let evals = of_type(&log, "eval");
    assert!(evals.len() >= 2, "{evals:?}");
    // The steps a checkpoint followed: the last step of every epoch.
    let mut epoch_ends: Vec<u64> = Vec::new();
    for w in train.windows(2) {
        if w[0]["epoch"] != w[1]["epoch"] {
            epoch_ends.push(u(&w[0]["step"]));
        }
    }
    let last = u(&train.last().unwrap()["step"]);
    epoch_ends.push(last);
    // Precise BN at the end of every epoch, once (the test at the same shape reuses it).
    let at: Vec<u64> = precise.iter().map(|p| u(&p["step"]) - 1).collect();
    assert_eq!(at, epoch_ends, "{precise:?}");
    for e in &evals {
        let step = u(&e["step"]);
        let trained = train.iter().find(|t| u(&t["step"]) == step).unwrap();
        let s = shape(&trained["shape"]);
        // PySlowFast's validation: the stage's base shape; short-cycle phases shrink the crop
        // of the step itself, not the stage's.
        assert_eq!(e["protocol"], "train");
        let p = precise.iter().find(|p| u(&p["step"]) == step + 1).unwrap();
        let ps = shape(&p["shape"]);
        assert_eq!(shape(&e["shape"]), ps[1..], "{e} {p}");
        assert_eq!(ps[1], s[1], "frames of the stage");
    }
    // Asked for 1000 batches: capped at the train split.
    let clips = multigrid::data::Dataset::store(data.join("train.mgstore"))
        .unwrap()
        .len() as u64;
    for p in &precise {
        let n = shape(&p["shape"])[0];
        assert_eq!(u(&p["batches"]), clips / n, "{p}");
        assert_eq!(u(&p["failed_clips"]), 0);
    }

    // A test crop larger than the training crop: the test needs its own statistics.
    let log = fit_log(
        config(
            &data,
            json!({"data": {"test_crop_size": 40}, "run": {"precise_bn_batches": 1}}),
        ),
        &root.join("bigger_test"),
    );
    let precise = of_type(&log, "precise_bn");
    let ends: Vec<Vec<u64>> = precise
        .iter()
        .filter(|p| u(&p["step"]) == last + 1)
        .map(|p| shape(&p["shape"]))
        .collect();
    assert_eq!(ends, [vec![2, 8, 32], vec![2, 8, 40]], "{precise:?}");

    // `centre` validation: the centred clip at the test shape, precise BN there.
    let log = fit_log(
        config(
            &data,
            json!({"data": {"test_crop_size": 40}, "run": {"precise_bn_batches": 1, "val_protocol": "centre"}}),
        ),
        &root.join("centre"),
    );
    for e in of_type(&log, "eval") {
        assert_eq!(shape(&e["shape"]), [8, 40], "{e}");
    }
    let last_precise = *of_type(&log, "precise_bn").last().unwrap();
    assert_eq!(shape(&last_precise["shape"]), [2, 8, 40]);
    assert_eq!(
        of_type(&log, "precise_bn")
            .iter()
            .filter(|p| u(&p["step"]) == last + 1)
            .count(),
        1
    );
}

/// Clips that fail to load during precise BN are replaced by other clips (PySlowFast retries
/// with another index) instead of entering the statistics as zeros.
#[cfg(feature = "video")]
#[test]
fn precise_bn_replaces_clips_that_fail_to_load() {
    let root = scratch("protocol_precise_bn_failures");
    let data = root.join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_multigrid"))
        .args([
            "gen-data", "--clips", "24", "--frames", "16", "--size", "40",
        ])
        .arg("--out")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let list = data.join("train.csv");
    let mut text = std::fs::read_to_string(&list).unwrap();
    for i in 0..12 {
        text.push_str(&format!("missing_{i}.mp4 {}\n", i % 3));
    }
    std::fs::write(&list, text).unwrap();
    let c = config(
        &data,
        json!({"solver": {"max_epoch": 1, "steps": [0], "lrs": [1]}, "train": {"eval_period": 1},
               "multigrid": {"long_cycle": false, "short_cycle": false},
               "run": {"precise_bn_batches": 1000}}),
    );
    let log = fit_log(c, &root.join("run"));
    let precise = of_type(&log, "precise_bn");
    assert!(!precise.is_empty());
    let failed: u64 = precise.iter().map(|p| u(&p["failed_clips"])).sum();
    assert!(failed > 0, "{precise:?}");
}
