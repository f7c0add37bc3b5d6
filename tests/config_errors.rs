//! Every bad config is rejected with a message that names the field and the value.

mod common;

use common::kinetics_json_with;
use multigrid::{Config, Error, Schedule};
use serde_json::json;

fn err(patch: serde_json::Value) -> String {
    match Schedule::from_json(&kinetics_json_with(patch)) {
        Ok(_) => panic!("accepted"),
        Err(e @ Error::Config(_)) => e.to_string(),
        Err(e) => panic!("wrong error kind: {e}"),
    }
}

fn assert_names(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "{msg:?} does not mention {p:?}");
    }
}

#[test]
fn unknown_keys_name_their_path() {
    assert_names(
        &err(json!({"data": {"num_frame": 8}})),
        &["data", "num_frame"],
    );
    assert_names(
        &err(json!({"multigrid": {"long_cycle_factor": []}})),
        &["multigrid", "long_cycle_factor"],
    );
    assert_names(&err(json!({"trainer": {}})), &["trainer"]);
}

#[test]
fn malformed_json() {
    let e = Config::from_json("{\"data\": ").unwrap_err();
    assert!(matches!(e, Error::Config(_)));
    assert!(e.to_string().contains("EOF"), "{e}");
    assert!(Config::from_json("[1, 2]").is_err());
    assert!(Config::from_json("").is_err());
}

#[test]
fn zero_and_negative_sizes() {
    assert_names(
        &err(json!({"data": {"num_frames": 0}})),
        &["data.num_frames", "0"],
    );
    assert_names(
        &err(json!({"data": {"num_frames": -8}})),
        &["data.num_frames", "-8"],
    );
    assert_names(
        &err(json!({"data": {"train_crop_size": 0}})),
        &["data.train_crop_size"],
    );
    assert_names(
        &err(json!({"data": {"sampling_rate": 0}})),
        &["data.sampling_rate"],
    );
    assert_names(
        &err(json!({"train": {"batch_size": 0}})),
        &["train.batch_size"],
    );
    assert_names(
        &err(json!({"train": {"batch_size": 1.5}})),
        &["train.batch_size", "1.5"],
    );
    assert_names(
        &err(json!({"data": {"train_jitter_scales": [320, 256]}})),
        &["train_jitter_scales", "320", "256"],
    );
    assert_names(
        &err(json!({"solver": {"max_epoch": 0}})),
        &["solver.max_epoch"],
    );
    assert_names(
        &err(json!({"multigrid": {"bn_base_size": 0}})),
        &["multigrid.bn_base_size"],
    );
    assert_names(
        &err(json!({"data": {"std": [0.2, 0.0, 0.2]}})),
        &["data.std[1]", "0"],
    );
}

#[test]
fn bad_steps_and_lrs() {
    assert_names(
        &err(json!({"solver": {"steps": [1, 94, 154]}})),
        &["solver.steps", "start at 0"],
    );
    assert_names(
        &err(json!({"solver": {"steps": [0, 94, 94]}})),
        &["solver.steps", "94"],
    );
    assert_names(
        &err(json!({"solver": {"steps": [0, 154, 94]}})),
        &["solver.steps", "94", "154"],
    );
    assert_names(
        &err(json!({"solver": {"max_epoch": 196}})),
        &["solver.max_epoch", "196"],
    );
    let base = json!({"multigrid": {"long_cycle": false, "short_cycle": false}});
    let mut p = base.clone();
    p["solver"] = json!({"lrs": [1, 0.1]});
    assert_names(&err(p), &["solver.lrs", "2", "4"]);
    let mut p = base;
    p["solver"] = json!({"base_lr": -0.1});
    assert_names(&err(p), &["solver.base_lr", "-0.1"]);
    assert_names(
        &err(json!({"solver": {"lr_policy": "linear"}})),
        &["solver.lr_policy", "linear"],
    );
    assert_names(
        &err(json!({"solver": {"steps": [0]}})),
        &["solver.steps", "[0]"],
    );
}

#[test]
fn bad_factors() {
    assert_names(
        &err(json!({"multigrid": {"long_cycle_factors": []}})),
        &["long_cycle_factors", "empty"],
    );
    assert_names(
        &err(json!({"multigrid": {"long_cycle_factors": [[0.0, 1.0]]}})),
        &["long_cycle_factors[0][0]", "0"],
    );
    assert_names(
        &err(json!({"multigrid": {"long_cycle_factors": [[0.01, 1.0]]}})),
        &["long_cycle_factors[0]", "frame count"],
    );
    assert_names(
        &err(json!({"multigrid": {"long_cycle_factors": [[1.0, 0.001]]}})),
        &["long_cycle_factors[0]", "crop size"],
    );
    assert_names(
        &err(json!({"multigrid": {"short_cycle_factors": [0.5, -1.0]}})),
        &["short_cycle_factors[1]", "-1"],
    );
    assert_names(
        &err(json!({"multigrid": {"short_cycle_factors": [0.001, 0.7]}})),
        &["short_cycle_factors[0]", "crop size"],
    );
    assert_names(
        &err(json!({"multigrid": {"epoch_factor": 0.0}})),
        &["multigrid.epoch_factor", "0"],
    );
    assert_names(
        &err(json!({"multigrid": {"epoch_factor": -1.5}})),
        &["multigrid.epoch_factor", "-1.5"],
    );
    assert_names(
        &err(json!({"multigrid": {"long_cycle_factors": [[2.0, 1.0]]}})),
        &["long_cycle_factors[0]", "relative batch"],
    );
}

#[test]
fn batch_not_divisible_by_world_size() {
    let s = common::kinetics();
    let e = multigrid::Plan::new(&s, 1000, 3, 0, 0).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)));
    assert!(
        e.to_string().contains("64") && e.to_string().contains('3'),
        "{e}"
    );
}

#[test]
fn config_file_errors_name_the_file() {
    let e = Config::from_file("/nonexistent/config.json").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/config.json"), "{e}");
}

/// The config's named choices are read once, as the config is: a value outside the list is an
/// error naming the key, the value and the choices.
#[test]
fn choices_outside_their_list_name_key_value_and_choices() {
    for (patch, want) in [
        (
            json!({"run": {"precision": "fp8"}}),
            "run.precision: must be auto, fp32, bf16 or fp16, got \"fp8\"",
        ),
        (
            json!({"run": {"device": "gpu"}}),
            "run.device: must be auto, cpu, cuda or cuda:N, got \"gpu\"",
        ),
        (
            json!({"run": {"memory_format": "nhwc"}}),
            "run.memory_format: must be contiguous or channels_last_3d",
        ),
        (
            json!({"run": {"val_protocol": "center"}}),
            "run.val_protocol: must be train or centre",
        ),
        (
            json!({"run": {"dist_backend": "gloo"}}),
            "run.dist_backend: must be auto, nccl or mpi",
        ),
        (
            json!({"run": {"dist_init_method": "tcp://host"}}),
            "run.dist_init_method: must be env://",
        ),
        (
            json!({"model": {"loss_func": "mse"}}),
            "model.loss_func: must be cross_entropy or bce_logit",
        ),
        (
            json!({"data": {"ensemble_method": "mean"}}),
            "data.ensemble_method: must be sum or max",
        ),
        (
            json!({"train": {"dataset": "ava"}}),
            "train.dataset: must be kinetics, charades or ssv2",
        ),
    ] {
        assert_names(&err(patch), &[want]);
    }
    // And they are written back as the same strings.
    let c = Config::from_json(&kinetics_json_with(json!({"run": {"device": "cuda:1",
        "dist_init_method": "tcp://10.0.0.1:29500", "memory_format": "channels_last_3d"}})))
    .unwrap();
    let back: serde_json::Value = serde_json::from_str(&c.to_json_string()).unwrap();
    assert_eq!(back["run"]["device"], "cuda:1");
    assert_eq!(back["run"]["dist_init_method"], "tcp://10.0.0.1:29500");
    assert_eq!(back["run"]["memory_format"], "channels_last_3d");
}
