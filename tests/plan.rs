//! The per-step plan: sharding, short-cycle batching, random access, determinism.

mod common;

use std::collections::HashSet;

use common::{kinetics, kinetics_json_with};
use multigrid::{Plan, Schedule};
use serde_json::json;

#[test]
fn kinetics_iterations_per_epoch() {
    // 240,000 clips on 8 GPUs: 30,000 per rank; exact counts with drop_last.
    let s = kinetics();
    let p = Plan::new(&s, 240_000, 8, 0, 0).unwrap();
    assert_eq!(p.shard_len(), 30_000);
    assert_eq!(p.steps_in_epoch(0).unwrap(), 351); // stage 0: [128, 64, 64]
    assert_eq!(p.steps_in_epoch(73).unwrap(), 702); // stage 1: [64, 32, 32]; 234 cycles + 48 left < 64
    assert_eq!(p.steps_in_epoch(110).unwrap(), 803); // stage 2: [64, 32, 16]
    assert_eq!(p.steps_in_epoch(142).unwrap(), 1606); // stage 3: [32, 16, 8]; 535 cycles + 32 of 40 left
    let base = Plan::new(&s.baseline().unwrap(), 240_000, 8, 0, 0).unwrap();
    assert_eq!(base.steps_in_epoch(0).unwrap(), 3750);
    assert_eq!(base.total_steps(), 3750 * 239);
    // Spec 1.5: about 3.42x fewer iterations (PySlowFast's approximate epoch length gives
    // 261.7k; the exact count is 261,582).
    assert_eq!(p.total_steps(), 261_582);
    let ratio = base.total_steps() as f64 / p.total_steps() as f64;
    assert!((ratio - 3.42).abs() < 0.02, "{ratio}");
}

#[test]
fn steps_cycle_phases_and_match_the_schedule() {
    let s = kinetics();
    let p = Plan::new(&s, 240_000, 8, 3, 1).unwrap();
    let first = p.epoch_first_step(142).unwrap();
    let shapes: Vec<(u32, u32, u32)> = (first..first + 4)
        .map(|k| {
            let st = p.step(k).unwrap();
            assert_eq!(st.epoch, 142);
            assert_eq!(st.stage, 3);
            assert_eq!(st.num_frames, 32);
            assert_eq!(st.bn_groups, 1);
            assert_eq!((st.sampling_rate_min, st.sampling_rate_max), (2, 2));
            (st.short_cycle_phase, st.batch_size, st.crop_size)
        })
        .collect();
    assert_eq!(
        shapes,
        [(0, 32, 112), (1, 16, 158), (2, 8, 224), (0, 32, 112)]
    );
    let st = p.step(0).unwrap();
    assert_eq!(
        (st.batch_size, st.crop_size, st.num_frames, st.bn_groups),
        (128, 112, 8, 8)
    );
    assert_eq!((st.jitter_min, st.jitter_max), (128, 320));
    assert_eq!((st.sampling_rate_min, st.sampling_rate_max), (2, 8));
    assert_eq!(st.global_batch_size, 1024);
    // The phase counter restarts every epoch.
    let e1 = p.step(p.epoch_first_step(1).unwrap()).unwrap();
    assert_eq!((e1.epoch, e1.iteration, e1.short_cycle_phase), (1, 0, 0));
}

#[test]
fn lr_uses_the_fractional_epoch() {
    let s = kinetics();
    let p = Plan::new(&s, 240_000, 8, 0, 0).unwrap();
    for k in [0u64, 100, 350, 351, 20_000, 261_581] {
        let st = p.step(k).unwrap();
        let e = f64::from(st.epoch) + st.iteration as f64 / st.iterations_in_epoch as f64;
        assert_eq!(st.lr, s.lr_at(e).unwrap(), "step {k}");
    }
    let last = p.step(p.total_steps() - 1).unwrap();
    assert_eq!(last.epoch, 357);
    assert!(last.eval_after && last.checkpoint_after);
    assert!((last.lr - 1e-4).abs() < 1e-15);
}

#[test]
fn eval_flag_on_last_step_of_eval_epochs() {
    let s = kinetics();
    let p = Plan::new(&s, 24_000, 8, 0, 0).unwrap();
    let end22 = p.epoch_first_step(23).unwrap() - 1;
    assert!(p.step(end22).unwrap().eval_after);
    assert!(!p.step(end22 - 1).unwrap().eval_after);
    assert!(
        !p.step(p.epoch_first_step(22).unwrap() - 1)
            .unwrap()
            .eval_after
    );
}

#[test]
fn ranks_see_disjoint_shards_covering_the_dataset() {
    let s = Schedule::from_json(&kinetics_json_with(json!({
        "multigrid": {"long_cycle": false, "short_cycle": false},
        "train": {"batch_size": 8}
    })))
    .unwrap();
    // 103 clips on 4 ranks: padded to 104, 26 per rank, batches of 2: 13 steps.
    let n = 103;
    let plans: Vec<Plan> = (0..4).map(|r| Plan::new(&s, n, 4, r, 9).unwrap()).collect();
    assert!(plans.iter().all(|p| p.steps_in_epoch(0).unwrap() == 13));
    let mut seen = Vec::new();
    for p in &plans {
        let mut buf = Vec::new();
        for k in 0..13 {
            p.step_indices(k, &mut buf).unwrap();
            assert_eq!(buf.len(), 2);
            seen.extend_from_slice(&buf);
        }
    }
    assert_eq!(seen.len(), 104);
    let unique: HashSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), 103, "every clip once, one padded repeat");
    assert!(seen.iter().all(|&i| i < n));
}

#[test]
fn short_cycle_batches_partition_the_shard_and_drop_the_tail() {
    let s = kinetics();
    // 1000 clips on 1 rank, stage 0 batches [1024, 512, 512] do not fit: make B0 small.
    let s2 = Schedule::from_json(&kinetics_json_with(json!({"train": {"batch_size": 2}}))).unwrap();
    drop(s);
    let p = Plan::new(&s2, 1000, 1, 0, 5).unwrap();
    // Stage 0: per-rank base 16, batches [32, 16, 16], cycle 64: 15 cycles (960) + 32 = 46 steps.
    assert_eq!(p.steps_in_epoch(0).unwrap(), 46);
    let mut all = Vec::new();
    let mut buf = Vec::new();
    for k in 0..46 {
        p.step_indices(k, &mut buf).unwrap();
        assert_eq!(buf.len() as u32, p.step(k).unwrap().batch_size);
        all.extend_from_slice(&buf);
    }
    assert_eq!(all.len(), 992);
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), 992, "no clip twice within an epoch");
}

#[test]
fn random_access_equals_a_walk_and_seeds_are_stable() {
    let s = kinetics();
    let p = Plan::new(&s, 5000, 8, 2, 77).unwrap();
    let q = Plan::new(&s, 5000, 8, 2, 77).unwrap();
    let total = p.total_steps();
    let mut epoch = 0;
    let mut iter = 0;
    for k in 0..total {
        let st = p.step(k).unwrap();
        if st.epoch != epoch {
            assert_eq!(st.epoch, epoch + 1);
            assert_eq!(iter, p.steps_in_epoch(epoch).unwrap());
            epoch = st.epoch;
            iter = 0;
        }
        assert_eq!(st.iteration, iter);
        iter += 1;
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for k in [0, total / 3, total - 1] {
        p.step_indices(k, &mut a).unwrap();
        q.step_indices(k, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(p.step(k).unwrap(), q.step(k).unwrap());
    }
    let other = Plan::new(&s, 5000, 8, 2, 78).unwrap();
    other.step_indices(0, &mut b).unwrap();
    p.step_indices(0, &mut a).unwrap();
    assert_ne!(a, b, "another seed shuffles differently");
    // Epochs shuffle differently too.
    let e1 = p.epoch_first_step(1).unwrap();
    p.step_indices(e1, &mut b).unwrap();
    assert_ne!(a, b);
}

#[test]
fn pinned_plan_indices() {
    // The data order of a seed must never change silently: resumed runs depend on it.
    let s = kinetics();
    let p = Plan::new(&s, 1000, 8, 1, 1234).unwrap();
    let mut buf = Vec::new();
    let step = p.epoch_first_step(150).unwrap() + 1;
    p.step_indices(step, &mut buf).unwrap();
    assert_eq!(&buf[..8], PINNED);
}

const PINNED: &[u64] = &[97, 575, 15, 739, 862, 408, 451, 478];

#[test]
fn bad_plan_arguments() {
    let s = kinetics();
    assert!(Plan::new(&s, 0, 8, 0, 0).is_err());
    assert!(Plan::new(&s, 1000, 0, 0, 0).is_err());
    assert!(Plan::new(&s, 1000, 8, 8, 0).is_err());
    let e = Plan::new(&s, 10, 8, 0, 0).unwrap_err();
    assert!(e.to_string().contains("no full batch"), "{e}");
    let p = Plan::new(&s, 1000, 8, 0, 0).unwrap();
    let e = p.step(p.total_steps()).unwrap_err();
    assert!(matches!(e, multigrid::Error::OutOfRange(_)), "{e}");
    // 12 clips per rank with bn_base_size 5: 2.4 -> 2 groups of 6, fine; 9 per rank with base
    // 4: 2.25 -> 2 groups does not divide 9.
    let s9 = Schedule::from_json(&kinetics_json_with(json!({
        "train": {"batch_size": 9}, "multigrid": {"bn_base_size": 4, "long_cycle_factors": [[1, 1]]}
    })))
    .unwrap();
    let e = Plan::new(&s9, 1000, 1, 0, 0).unwrap_err();
    assert!(e.to_string().contains("BN groups"), "{e}");
}

/// A baseline with sync BN over 4 ranks (PySlowFast's Charades and SSv2 baselines): every
/// step of an 8-rank plan syncs 4 ranks of 2 clips, so BN sees 8 clips as on 8 GPUs there.
#[test]
fn baseline_sync_bn_over_bn_sync_devices_ranks() {
    let s = Schedule::from_json(&kinetics_json_with(json!({
        "train": {"batch_size": 16},
        "multigrid": {"long_cycle": false, "short_cycle": false, "bn_sync_devices": 4}
    })))
    .unwrap();
    for rank in [0, 5] {
        let p = Plan::new(&s, 1000, 8, rank, 0).unwrap();
        for k in [0, p.total_steps() / 2, p.total_steps() - 1] {
            let st = p.step(k).unwrap();
            assert_eq!(st.batch_size, 2);
            assert_eq!((st.bn_groups, st.bn_sync_ranks), (1, 4));
            assert_eq!(st.batch_size * st.bn_sync_ranks / st.bn_groups, 8);
        }
    }
    // Sync devices 3 on 8 ranks of 2 clips (bn_base_size 6): 3 does not group 8 ranks, which
    // the trainer refuses at start (check_world_fits_schedule).
    let s3 = Schedule::from_json(&kinetics_json_with(json!({
        "train": {"batch_size": 16},
        "multigrid": {"long_cycle": false, "bn_base_size": 6, "bn_sync_devices": 3}
    })))
    .unwrap();
    assert_eq!(s3.bn_grouping(0, 8).sync_ranks, 3);
}

/// The plan's work (sum of batch x frames x crop^2) equals a walk over every step, and by the
/// multigrid design (constant work per iteration) its ratio to the baseline is the step ratio.
#[test]
fn work_equals_a_walk_over_the_steps() {
    let s = common::schedule("synthetic_slowfast_tiny_multigrid.json");
    let plan = Plan::new(&s, 1000, 2, 1, 3).unwrap();
    let mut walk = 0.0;
    for k in 0..plan.total_steps() {
        let st = plan.step(k).unwrap();
        walk += f64::from(st.batch_size)
            * f64::from(st.num_frames)
            * f64::from(st.crop_size)
            * f64::from(st.crop_size);
    }
    assert!(
        (plan.work() - walk).abs() <= 1e-12 * walk,
        "{} vs {walk}",
        plan.work()
    );
    let k400 = common::kinetics();
    let mg = Plan::new(&k400, 240000, 8, 0, 0).unwrap();
    let base = Plan::new(&k400.baseline().unwrap(), 240000, 8, 0, 0).unwrap();
    let work_ratio = base.work() / mg.work();
    let step_ratio = base.total_steps() as f64 / mg.total_steps() as f64;
    assert!(
        (work_ratio - step_ratio).abs() < 0.01,
        "{work_ratio} vs {step_ratio}"
    );
}
