//! Golden numbers from the spec (sections 1.5 and 1.15) and PySlowFast's rules.

mod common;

use common::{kinetics, kinetics_json_with, schedule};
use multigrid::{Mode, Schedule};
use serde_json::json;

fn ends(s: &Schedule) -> Vec<u32> {
    s.stages().iter().map(|s| s.end_epoch).collect()
}

fn assert_close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-12 * y.abs().max(1.0), "{a:?} vs {b:?}");
    }
}

#[test]
fn kinetics_stage_table() {
    let s = kinetics();
    assert_eq!(s.mode(), Mode::LongShortCycle);
    assert_eq!(
        ends(&s),
        [73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 358]
    );
    let shapes: Vec<(u32, u32, u32, u32)> = s
        .stages()
        .iter()
        .map(|st| (st.lr_stage, st.batch_factor, st.num_frames, st.crop_size))
        .collect();
    let cycle = [(8, 8, 158), (4, 16, 158), (2, 16, 224), (1, 32, 224)];
    for (i, &(k, b, t, c)) in shapes.iter().enumerate().take(12) {
        assert_eq!(
            (k, b, t, c),
            (
                (i / 4) as u32,
                cycle[i % 4].0,
                cycle[i % 4].1,
                cycle[i % 4].2
            )
        );
    }
    assert_eq!(shapes[12], (3, 1, 32, 224));
    assert_eq!(
        s.steps(),
        [0, 73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 343]
    );
    assert_close(
        s.lrs(),
        &[
            8.0, 4.0, 2.0, 1.0, 0.8, 0.4, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01, 0.01, 0.001,
        ],
    );
    // 239 x 1.5 = 358.5 rounds half to even.
    assert_eq!(s.max_epoch(), 358);
}

#[test]
fn kinetics_per_stage_details() {
    let s = kinetics();
    let per_gpu = |i: usize| -> Vec<u32> {
        let base = s.stages()[i].batch_factor * 64 / 8;
        s.short_cycle_batch_factors(i)
            .iter()
            .map(|f| f * base)
            .collect()
    };
    let expect_batches = [[128, 64, 64], [64, 32, 32], [64, 32, 16], [32, 16, 8]];
    let expect_crops = [
        [112, 158, 158],
        [112, 158, 158],
        [112, 158, 224],
        [112, 158, 224],
    ];
    let expect_bn = [8, 4, 2, 1];
    let expect_rate = [[2, 8], [2, 4], [2, 4], [2, 2]];
    for i in 0..13 {
        let c = i.min(12) % 4;
        let c = if i == 12 { 3 } else { c };
        assert_eq!(per_gpu(i), expect_batches[c], "stage {i}");
        assert_eq!(s.short_cycle_crops(i), expect_crops[c], "stage {i}");
        assert_eq!(s.bn_grouping(i, 8).groups, expect_bn[c], "stage {i}");
        assert_eq!(s.bn_grouping(i, 8).sync_ranks, 1);
        assert_eq!(s.sampling_rate_range(i), expect_rate[c], "stage {i}");
    }
    // BN group sizes: 8-split and 4-split stages [16, 8, 8]; 2-split and plain [32, 16, 8].
    for (i, sizes) in [
        (0, [16, 8, 8]),
        (1, [16, 8, 8]),
        (2, [32, 16, 8]),
        (3, [32, 16, 8]),
    ] {
        let g = s.bn_grouping(i, 8).groups;
        let got: Vec<u32> = per_gpu(i).iter().map(|b| b / g).collect();
        assert_eq!(got, sizes, "stage {i}");
    }
    // Jitter lower bound scales with the crop; upper bound stays.
    assert_eq!(s.jitter_scales(112), [128, 320]);
    assert_eq!(s.jitter_scales(158), [181, 320]);
    assert_eq!(s.jitter_scales(224), [256, 320]);
}

#[test]
fn kinetics_eval_epochs() {
    let s = kinetics();
    assert_eq!(
        s.eval_epochs(),
        [
            22, 47, 72, 83, 96, 109, 119, 130, 141, 145, 151, 157, 172, 188, 204, 211, 219, 227,
            233, 240, 247, 250, 254, 258, 268, 279, 290, 295, 301, 307, 311, 316, 321, 322, 325,
            328, 337, 347, 357
        ]
    );
    // With the long cycle, checkpoints follow the eval rule, not train.checkpoint_period = 1.
    assert!(s.is_checkpoint_epoch(72));
    assert!(!s.is_checkpoint_epoch(71));
}

#[test]
fn kinetics_lr() {
    let s = kinetics();
    // Warm-up: linear from 0.01 to the stage-0 LR 0.8 over 34 epochs.
    assert!((s.lr_at(0.0).unwrap() - 0.01).abs() < 1e-12);
    assert!((s.lr_at(17.0).unwrap() - (0.01 + 17.0 * (0.8 - 0.01) / 34.0)).abs() < 1e-12);
    assert!((s.lr_at(34.0).unwrap() - 0.8).abs() < 1e-12);
    assert!((s.lr_at(72.99).unwrap() - 0.8).abs() < 1e-12);
    assert!((s.lr_at(73.0).unwrap() - 0.4).abs() < 1e-12);
    assert!((s.lr_at(158.5).unwrap() - 0.08).abs() < 1e-12);
    assert!((s.lr_at(342.9).unwrap() - 0.001).abs() < 1e-12);
    assert!((s.lr_at(343.0).unwrap() - 0.0001).abs() < 1e-12);
    assert!((s.lr_at(357.99).unwrap() - 0.0001).abs() < 1e-12);
    assert!((s.lr_at(400.0).unwrap() - 0.0001).abs() < 1e-12);
}

#[test]
fn charades_table() {
    let s = schedule("charades_slowfast_16x8_r50_multigrid.json");
    assert_eq!(ends(&s), [31, 47, 60, 67, 73, 76, 79, 80, 86]);
    let base: Vec<(u32, u32, u32)> = s.stages()[..4]
        .iter()
        .map(|st| (st.batch_factor, st.num_frames, st.crop_size))
        .collect();
    assert_eq!(
        base,
        [(8, 16, 158), (4, 32, 158), (2, 32, 224), (1, 64, 224)]
    );
    assert_eq!(s.steps(), [0, 31, 47, 60, 67, 73, 76, 79, 80, 83]);
    assert_close(
        s.lrs(),
        &[8.0, 4.0, 2.0, 1.0, 0.8, 0.4, 0.2, 0.1, 0.1, 0.01],
    );
    assert_eq!(s.max_epoch(), 86); // 85.5 rounds half to even
                                   // B0 = 16 on 8 GPUs: SubBN 2, plain, sync over 2, sync over 4 (spec 1.10).
    let bn: Vec<(u32, u32)> = (0..4)
        .map(|i| {
            let g = s.bn_grouping(i, 8);
            (g.groups, g.sync_ranks)
        })
        .collect();
    assert_eq!(bn, [(2, 1), (1, 1), (1, 2), (1, 4)]);
}

#[test]
fn ssv2_table_with_zero_length_stage() {
    let s = schedule("ssv2_slowfast_16x8_r50_multigrid.json");
    assert_eq!(ends(&s), [11, 16, 21, 24, 27, 28, 30, 30, 33]);
    assert_eq!(s.max_epoch(), 33);
    // The zero-length stage 7 is never trained: epoch 30 belongs to the fine-tune stage.
    assert_eq!(s.stage_index_at(29), 6);
    assert_eq!(s.stage_index_at(30), 8);
}

#[test]
fn short_cycle_only_scales_steps_and_keeps_lrs() {
    let s = Schedule::from_json(&kinetics_json_with(
        json!({"multigrid": {"long_cycle": false}}),
    ))
    .unwrap();
    assert_eq!(s.mode(), Mode::ShortCycle);
    assert_eq!(s.steps(), [0, 141, 231, 294]);
    assert_eq!(s.max_epoch(), 358); // int(239 * 1.5)
    assert_eq!(s.stages().len(), 1);
    assert_eq!(s.short_cycle_batch_factors(0), [4, 2, 1]);
    assert_eq!(s.short_cycle_crops(0), [112, 158, 224]);
    assert_eq!(s.sampling_rate_range(0), [2, 2]);
    assert_eq!(s.bn_grouping(0, 8).groups, 1);
    assert!((s.lr_at(200.0).unwrap() - 0.01).abs() < 1e-12);
}

#[test]
fn long_cycle_without_short_cycle_works() {
    // PySlowFast raises IndexError here; the fine-tune entry takes the last base shape.
    let s = Schedule::from_json(&kinetics_json_with(
        json!({"multigrid": {"short_cycle": false}}),
    ))
    .unwrap();
    assert_eq!(s.mode(), Mode::LongCycle);
    assert_eq!(s.stages().len(), 13);
    let last = s.stages()[12];
    assert_eq!(
        (
            last.lr_stage,
            last.batch_factor,
            last.num_frames,
            last.crop_size
        ),
        (3, 1, 32, 224)
    );
    assert_eq!(s.max_epoch(), 358);
    // Without short cycles the per-stage average batch is the base batch: 8, 4, 2, 1, so the
    // LR stage of 94 epochs splits 8:4:2:1 before scaling.
    assert_eq!(s.short_cycle_batch_factors(0), [1]);
    assert_eq!(s.short_cycle_crops(0), [158]);
    let e = ends(&s);
    assert!(e[0] > e[1] - e[0] && e[1] - e[0] > e[2] - e[1], "{e:?}");
}

#[test]
fn baseline_is_the_config_as_given() {
    let s = schedule("kinetics_slowfast_8x8_r50_stepwise.json");
    assert_eq!(s.mode(), Mode::Baseline);
    assert_eq!(s.max_epoch(), 239);
    assert_eq!(s.steps(), [0, 94, 154, 196]);
    assert!((s.lr_at(100.0).unwrap() - 0.01).abs() < 1e-12);
    assert_eq!(s.jitter_scales(224), [256, 320]);
    // Eval every 10 epochs and at the last.
    let ev = s.eval_epochs();
    assert_eq!(&ev[..3], [9, 19, 29]);
    assert_eq!(*ev.last().unwrap(), 238);
    // train.checkpoint_period = 1: every epoch.
    assert!((0..239).all(|e| s.is_checkpoint_epoch(e)));
}

/// The recipe normalises 8 clips per GPU; one device taking the whole batch of 64 must too, in
/// every mode, or baseline and multigrid runs would not be comparable.
#[test]
fn bn_groups_of_bn_base_size_in_every_mode() {
    let base = schedule("kinetics_slowfast_8x8_r50_stepwise.json");
    let short = Schedule::from_json(&kinetics_json_with(
        json!({"multigrid": {"long_cycle": false}}),
    ))
    .unwrap();
    for s in [&base, &short] {
        let g = |world| {
            let b = s.bn_grouping(0, world);
            (b.groups, b.sync_ranks)
        };
        assert_eq!(g(1), (8, 1), "{:?}", s.mode());
        assert_eq!(g(2), (4, 1));
        assert_eq!(g(8), (1, 1));
        // Without multigrid.bn_sync_devices ranks below bn_base_size do not sync.
        assert_eq!(g(16), (1, 1));
    }
}

/// PySlowFast's sync_batchnorm baselines (Charades, SSv2: 16 clips on 8 GPUs, NUM_SYNC_DEVICES
/// 4): without the long cycle, `multigrid.bn_sync_devices` pools 4 ranks of 2 clips.
#[test]
fn sync_bn_without_the_long_cycle_follows_bn_sync_devices() {
    let s = Schedule::from_json(&kinetics_json_with(json!({
        "train": {"batch_size": 16},
        "multigrid": {"long_cycle": false, "short_cycle": false, "bn_sync_devices": 4}
    })))
    .unwrap();
    let g = |world| {
        let b = s.bn_grouping(0, world);
        (b.groups, b.sync_ranks)
    };
    // 2 clips a rank: 4 ranks make the 8 clips of bn_base_size.
    assert_eq!(g(8), (1, 4));
    assert_eq!(g(4), (1, 2));
    assert_eq!(g(2), (1, 1));
    assert_eq!(g(1), (2, 1));
    // 1 clip a rank would need 8 ranks; bn_sync_devices caps the group at 4.
    assert_eq!(g(16), (1, 4));
    // The long cycle sets its own sync groups.
    let e = Schedule::from_json(&kinetics_json_with(
        json!({"multigrid": {"bn_sync_devices": 4}}),
    ))
    .unwrap_err();
    assert!(e.to_string().contains("multigrid.bn_sync_devices"), "{e}");
    let e = Schedule::from_json(&kinetics_json_with(json!({
        "multigrid": {"long_cycle": false, "bn_sync_devices": 0}
    })))
    .unwrap_err();
    assert!(e.to_string().contains("multigrid.bn_sync_devices"), "{e}");
}

#[test]
fn cosine_policy() {
    let text = json!({
        "solver": {"lr_policy": "cosine", "base_lr": 0.8, "max_epoch": 100, "cosine_end_lr": 0.0,
                   "warmup_epochs": 10.0, "warmup_start_lr": 0.1}
    });
    let s = Schedule::from_json(&text.to_string()).unwrap();
    let cos = |e: f64| 0.8 * ((std::f64::consts::PI * e / 100.0).cos() + 1.0) * 0.5;
    assert!((s.lr_at(50.0).unwrap() - 0.4).abs() < 1e-12);
    assert!((s.lr_at(75.0).unwrap() - cos(75.0)).abs() < 1e-12);
    // Warm-up ramps linearly to the cosine value at its end.
    let alpha = (cos(10.0) - 0.1) / 10.0;
    assert!((s.lr_at(4.0).unwrap() - (0.1 + 4.0 * alpha)).abs() < 1e-12);
    // Cosine after warm-up shifts the curve.
    let text = json!({"solver": {"lr_policy": "cosine", "base_lr": 1.0, "max_epoch": 110,
                                 "warmup_epochs": 10.0, "cosine_after_warmup": true}});
    let s = Schedule::from_json(&text.to_string()).unwrap();
    assert!((s.lr_at(60.0).unwrap() - 0.5).abs() < 1e-12);
}

#[test]
fn cosine_with_long_cycle_uses_multigrid_max_epoch() {
    // PySlowFast builds the long-cycle schedule from the steps and then ignores its lrs.
    let s = Schedule::from_json(&kinetics_json_with(
        json!({"solver": {"lr_policy": "cosine", "warmup_epochs": 0.0}}),
    ))
    .unwrap();
    assert_eq!(s.max_epoch(), 358);
    assert!((s.lr_at(179.0).unwrap() - 0.05).abs() < 1e-12);
}

#[test]
fn default_config_has_pyslowfast_defaults() {
    let c = multigrid::Config::default();
    assert_eq!(c.data.num_frames, 8);
    assert_eq!(c.data.sampling_rate, 8);
    assert_eq!(c.data.train_crop_size, 224);
    assert_eq!(c.data.train_jitter_scales, [256, 320]);
    assert_eq!(c.train.batch_size, 64);
    assert_eq!(c.solver.max_epoch, 300);
    assert_eq!(c.solver.lr_policy, multigrid::schedule::LrPolicy::Cosine);
    assert!(c.solver.nesterov);
    assert_eq!(c.multigrid.epoch_factor, 1.5);
    assert_eq!(c.multigrid.bn_base_size, 8);
    assert_eq!(c.multigrid.eval_freq, 3);
    assert_eq!(c.multigrid.long_cycle_factors.len(), 4);
    // The default config parses from "{}" to the same thing.
    assert_eq!(multigrid::Config::from_json("{}").unwrap(), c);
}
