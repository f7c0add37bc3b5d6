//! The paper's other two datasets in PySlowFast's formats, end to end on a tiny SlowFast:
//! Charades (frame lists with per-frame label sets, multi-hot targets, binary cross-entropy,
//! sigmoid scores, max over test views, mAP) and Something-Something V2 (label JSONs, one
//! frame per segment, no flip, 1 x 1 test view, top-1).
#![cfg(feature = "torch")]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{fit_log, of_type, scratch};
use multigrid::data::dataset::load_batch;
use multigrid::data::frame_list_gen::{write_charades, write_ssv2, FrameListOptions};
use multigrid::data::Dataset;
use multigrid::plan::Plan;
use multigrid::train::Trainer;
use multigrid::Schedule;
use serde_json::{json, Value};
use tch::Tensor;

fn options() -> FrameListOptions {
    FrameListOptions {
        videos: 30,
        frames: 16,
        size: 40,
        seed: 3,
        val_fraction: 0.2,
    }
}

/// Two baseline epochs of a tiny SlowFast on `data`, evaluated after each, then the test.
fn config(data: &Path, patch: Value) -> multigrid::Config {
    let mut v = json!({
        "data": {"num_frames": 8, "sampling_rate": 2, "train_jitter_scales": [34, 40],
                 "train_crop_size": 32, "test_crop_size": 32},
        "train": {"batch_size": 4, "checkpoint_period": 2, "eval_period": 1},
        "solver": {"base_lr": 0.05, "lr_policy": "steps_with_relative_lrs", "lrs": [1], "steps": [0],
                   "max_epoch": 2},
        "model": {"depth": 18, "width_per_group": 8, "alpha": 2, "num_classes": 12},
        "run": {"device": "cpu", "data_dir": data, "precise_bn_batches": 2,
                "test_num_temporal_views": 2, "test_num_spatial_crops": 1, "log_period": 1}
    });
    common::merge(&mut v, patch);
    serde_json::from_value(v).unwrap()
}

fn charades_config(data: &Path) -> multigrid::Config {
    config(
        data,
        json!({"train": {"dataset": "charades"},
               "data": {"multi_label": true, "ensemble_method": "max"},
               "model": {"loss_func": "bce_logit", "head_act": "sigmoid"}}),
    )
}

/// Charades: training batches carry the union of the label sets of the frames each clip spans;
/// a run trains with binary cross-entropy and reports mAP on val (which is also the test
/// split, as in PySlowFast).
#[test]
fn charades_trains_on_label_sets_and_reports_map() {
    let root = scratch("datasets_charades");
    let data = root.join("data");
    let summary = write_charades(&data, &options()).unwrap();
    let c = charades_config(&data);
    let train = open(&c, "train");
    assert!(train.is_multi_label());
    assert_eq!(train.len() as u64, summary.train_videos);

    // The loader's targets are the label sets of the frames each clip spans.
    let schedule = Schedule::new(c.clone()).unwrap();
    let plan = Plan::new(&schedule, train.len() as u64, 1, 0, 0).unwrap();
    let (mut clips, mut multi) = (0, 0);
    for k in 0..plan.steps_in_epoch(0).unwrap() {
        let b = load_batch(&train, &plan, &plan.step(k).unwrap(), 2).unwrap();
        assert!(b.labels.is_empty());
        let targets = b.targets.as_ref().unwrap();
        assert_eq!(targets.len(), b.len() * 12);
        for row in targets.chunks(12) {
            assert!(row.iter().all(|&v| v == 0.0 || v == 1.0));
            let positives = row.iter().filter(|&&v| v == 1.0).count();
            clips += 1;
            multi += usize::from(positives > 1);
        }
    }
    assert!(
        clips > 0 && multi > 0,
        "{multi} of {clips} clips have 2+ labels"
    );

    let log = fit_log(c.clone(), &root.join("run"));
    let train_lines = of_type(&log, "train");
    assert!(!train_lines.is_empty());
    // Binary cross-entropy over 12 classes starts near ln 2 per class, far below the
    // cross-entropy of 12 classes (ln 12 = 2.48).
    let first = train_lines[0]["loss"].as_f64().unwrap();
    assert!(first > 0.2 && first < 1.0, "BCE loss {first}");
    let evals = of_type(&log, "eval");
    assert_eq!(evals.len(), 2);
    for e in &evals {
        assert!(
            e["map"].as_f64().is_some(),
            "multi-label evaluation reports mAP: {e}"
        );
        assert_eq!(e["clips"].as_u64().unwrap(), summary.val_videos);
        whole_clips(e["top1"].as_f64().unwrap(), summary.val_videos, e);
    }
    let s = of_type(&log, "summary")[0];
    assert!(
        s["test_map"].as_f64().is_some(),
        "the test reports mAP: {s}"
    );

    // A trained model's mAP has no known value; a head that ignores its input has one. Every
    // clip then scores the same for a class, one threshold holding all N clips, so class c's
    // AP is its positives P_c over N, and the mAP is their mean over the classes that occur
    // in the split (PySlowFast drops the others).
    let val = open(&c, "val");
    let sets: Vec<Vec<u32>> = (0..val.len())
        .map(|i| val.labels_in(i, [0, 0]).unwrap())
        .collect();
    let n = sets.len() as f64;
    let positives: Vec<usize> = (0..12u32)
        .map(|class| sets.iter().filter(|s| s.contains(&class)).count())
        .collect();
    let present: Vec<f64> = positives
        .iter()
        .filter(|&&p| p > 0)
        .map(|&p| p as f64 / n)
        .collect();
    assert!(present.len() > 1 && present.len() < 12, "{positives:?}");
    let want_map = 100.0 * present.iter().sum::<f64>() / present.len() as f64;
    // Multi-label top-k: the share of clips whose k best classes include one of theirs.
    let share = |classes: &[u32]| {
        let hit = sets
            .iter()
            .filter(|s| s.iter().any(|class| classes.contains(class)));
        100.0 * hit.count() as f64 / n
    };
    let mut t = Trainer::new(c, &root.join("known")).unwrap();
    for top in [0, 5, 11] {
        let (want_top1, want_top5) = constant_head(&t, top);
        for split in ["val", "test"] {
            let acc = t.evaluate_named(split).unwrap();
            let at = format!("{split}, class {top} first: {acc:?}");
            assert_eq!(acc.clips, sets.len(), "{at}");
            close(acc.map.expect("multi-label reports mAP"), want_map, &at);
            close(acc.top1, share(&want_top1), &at);
            close(acc.top5, share(&want_top5), &at);
        }
    }
}

/// Something-Something V2: classes from the label JSONs, one frame per segment, no flip; a run
/// reports top-1 (no mAP) over the val videos, and the test scores 1 x 1 views.
#[test]
fn ssv2_trains_on_templates_and_reports_top1() {
    let root = scratch("datasets_ssv2");
    let data = root.join("data");
    let summary = write_ssv2(&data, &options()).unwrap();
    let c = config(
        &data,
        json!({"train": {"dataset": "ssv2"}, "data": {"random_flip": false},
               "run": {"test_num_temporal_views": 1, "test_num_spatial_crops": 1}}),
    );
    let val = open(&c, "val");
    assert!(!val.is_multi_label());
    assert_eq!(val.len() as u64, summary.val_videos);
    assert!((0..val.len()).all(|i| val.label(i).unwrap() < 12));

    let log = fit_log(c.clone(), &root.join("run"));
    let evals = of_type(&log, "eval");
    assert_eq!(evals.len(), 2);
    for e in &evals {
        assert!(e["map"].is_null(), "{e}");
        assert_eq!(e["clips"].as_u64().unwrap(), summary.val_videos);
        whole_clips(e["top1"].as_f64().unwrap(), summary.val_videos, e);
    }
    let s = of_type(&log, "summary")[0];
    assert!(
        s["test_top1"].as_f64().is_some() && s["test_map"].is_null(),
        "{s}"
    );

    // A trained model's top-1 has no known value; a head that ignores its input has one: it
    // calls every clip its first class, so the top-1 is that class's share of the split (the
    // top-5 that of its five best classes). Each class in turn: the shares add up to 100.
    let labels: Vec<u32> = (0..val.len()).map(|i| val.label(i).unwrap()).collect();
    let share = |classes: &[u32]| {
        let hit = labels.iter().filter(|l| classes.contains(l)).count();
        100.0 * hit as f64 / labels.len() as f64
    };
    let mut t = Trainer::new(c, &root.join("known")).unwrap();
    let mut total = 0.0;
    for top in 0..12 {
        let (want_top1, want_top5) = constant_head(&t, top);
        for split in ["val", "test"] {
            let acc = t.evaluate_named(split).unwrap();
            let at = format!("{split}, class {top} first: {acc:?}");
            assert_eq!(acc.clips, labels.len(), "{at}");
            assert!(acc.map.is_none(), "{at}");
            close(acc.top1, share(&want_top1), &at);
            close(acc.top5, share(&want_top5), &at);
        }
        total += share(&want_top1);
    }
    close(total, 100.0, "the classes' shares");
    // Not all one class, so the per-class values above differ between classes.
    assert!(labels.iter().any(|&l| l != labels[0]), "{labels:?}");
}

/// A Charades config with single-label settings, or the reverse, is refused with the keys to
/// change, before any data is read.
#[test]
fn mismatched_dataset_labels_and_loss_are_config_errors() {
    let data = Path::new("/nonexistent");
    let bad = config(data, json!({"train": {"dataset": "charades"}}));
    let e = Schedule::new(bad).unwrap_err().to_string();
    assert!(e.contains("data.multi_label"), "{e}");
    let bad = config(data, json!({"data": {"multi_label": true}}));
    let e = Schedule::new(bad).unwrap_err().to_string();
    assert!(e.contains("bce_logit"), "{e}");
    // A choice outside the list is refused as the config is read, naming key and value.
    let e = multigrid::Config::from_json(&json!({"model": {"head_act": "tanh"}}).to_string())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.head_act: must be softmax or sigmoid, got \"tanh\""),
        "{e}"
    );
}

fn open(c: &multigrid::Config, split: &str) -> Arc<Dataset> {
    Arc::new(multigrid::train::open_split(c, split).unwrap())
}

/// Zeroes the classifier's weights and sets its bias so that every clip scores class `top`
/// first, then `top + 1`, ... (mod 12), whatever its frames. Returns the classes ranked first
/// and the five ranked first.
fn constant_head(t: &Trainer, top: u32) -> (Vec<u32>, Vec<u32>) {
    let vars = t.var_store().variables();
    let bias: Vec<f32> = (0..12u32)
        .map(|c| -(((c + 12 - top) % 12) as f32))
        .collect();
    tch::no_grad(|| {
        let _ = vars["head.projection.weight"].shallow_clone().zero_();
        vars["head.projection.bias"]
            .shallow_clone()
            .copy_(&Tensor::from_slice(&bias));
    });
    let ranked: Vec<u32> = (0..5).map(|k| (top + k) % 12).collect();
    (ranked[..1].to_vec(), ranked)
}

fn close(got: f64, want: f64, at: &str) {
    assert!((got - want).abs() < 1e-9, "{got} != {want}: {at}");
}

/// A top-1 in percent of `clips` clips is a whole number of them.
fn whole_clips(top1: f64, clips: u64, at: &Value) {
    let hits = top1 * clips as f64 / 100.0;
    assert!(
        (0.0..=clips as f64).contains(&hits) && (hits - hits.round()).abs() < 1e-9,
        "top-1 {top1}% is not a whole number of {clips} clips: {at}"
    );
}
