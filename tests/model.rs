//! SlowFast: PySlowFast's names and size, shape-agnostic forward, sub-batch BN.
#![cfg(feature = "torch")]

mod common;

use common::tiny_model as tiny;
use multigrid::model::bn::{Bn, GroupBatchNorm};
use multigrid::model::{HeadPool, SlowFast};
use multigrid::schedule::ModelConfig;
use tch::{nn, Device, Kind, Tensor};

#[test]
fn r50_has_pyslowfast_names_and_size() {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = SlowFast::new(&vs.root(), &ModelConfig::default()).unwrap();
    let vars = vs.variables();
    for key in [
        "s1.pathway0_stem.conv.weight",
        "s1.pathway1_stem.bn.running_var",
        "s1_fuse.conv_f2s.weight",
        "s1_fuse.bn.weight",
        "s2.pathway1_res0.branch1_bn.running_mean",
        "s3.pathway0_res2.branch2.b_bn.weight",
        "s4.pathway0_res5.branch2.c.weight",
        "s5.pathway1_res2.branch2.a.weight",
        "s4_fuse.conv_f2s.weight",
        "head.projection.weight",
        "head.projection.bias",
    ] {
        assert!(vars.contains_key(key), "missing {key}");
    }
    assert!(
        !vars.contains_key("s5_fuse.conv_f2s.weight"),
        "no fusion after res5"
    );
    assert_eq!(vars["s1_fuse.conv_f2s.weight"].size(), [16, 8, 7, 1, 1]);
    assert_eq!(
        vars["s2.pathway0_res0.branch1.weight"].size(),
        [256, 80, 1, 1, 1]
    );
    assert_eq!(
        vars["s4.pathway0_res0.branch2.a.weight"].size(),
        [256, 640, 3, 1, 1]
    );
    assert_eq!(vars["head.projection.weight"].size(), [400, 2304]);
    // Spec 3.7: 34.57 M parameters with fusion kernel 7 (conv, BN gamma/beta, FC).
    let params: i64 = vs
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    assert!(
        (params as f64 / 1e6 - 34.57).abs() < 0.005,
        "{params} parameters"
    );
    // Zero-init of each block's last BN; the shortcut BN is not affected.
    assert_eq!(
        vars["s3.pathway0_res2.branch2.c_bn.weight"]
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );
    assert_eq!(
        vars["s3.pathway0_res0.branch1_bn.weight"]
            .mean(Kind::Float)
            .double_value(&[]),
        1.0
    );
    // The released 8x8 input: slow 8 frames, fast 32, 224 px.
    let slow = Tensor::randn([1, 3, 8, 224, 224], (Kind::Float, Device::Cpu));
    let fast = Tensor::randn([1, 3, 32, 224, 224], (Kind::Float, Device::Cpu));
    let logits = tch::no_grad(|| model.forward(&slow, &fast, 1, false).unwrap());
    assert_eq!(logits.size(), [1, 400]);
}

#[test]
fn one_model_takes_every_multigrid_shape() {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = SlowFast::new(&vs.root(), &tiny()).unwrap();
    for (n, t, s, groups) in [(8, 8, 32, 4), (4, 16, 45, 2), (2, 4, 24, 1), (6, 16, 64, 3)] {
        let slow = Tensor::randn([n, 3, t / 4, s, s], (Kind::Float, Device::Cpu));
        let fast = Tensor::randn([n, 3, t, s, s], (Kind::Float, Device::Cpu));
        let logits = model.forward(&slow, &fast, groups, true).unwrap();
        assert_eq!(logits.size(), [n, 12]);
        logits.sum(Kind::Float).backward();
    }
    let g = vs.variables()["s1.pathway0_stem.conv.weight"].grad();
    assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0);
}

#[test]
fn bn_over_k_groups_equals_k_separate_batchnorms() {
    let vs = nn::VarStore::new(Device::Cpu);
    let bn = GroupBatchNorm::new(&(vs.root() / "bn"), 4, false).unwrap();
    tch::no_grad(|| {
        bn.weight
            .shallow_clone()
            .copy_(&Tensor::from_slice(&[1.0f32, 2.0, 0.5, -1.0]));
        bn.bias
            .shallow_clone()
            .copy_(&Tensor::from_slice(&[0.0f32, 0.1, -0.2, 0.3]));
    });
    let x = Tensor::randn([6, 4, 2, 3, 3], (Kind::Float, Device::Cpu)) * 2.0 + 0.5;
    let k = 3;
    let y = bn.forward(&x, Bn::groups(k), true).unwrap();
    let mut means = Vec::new();
    let mut vars = Vec::new();
    for g in 0..k {
        // PySlowFast's view puts clip i in group i mod k.
        let idx = Tensor::arange_start_step(g, 6, k, (Kind::Int64, Device::Cpu));
        let xg = x.index_select(0, &idx);
        let (mut rm, mut rv) = (
            Tensor::zeros([4], (Kind::Float, Device::Cpu)),
            Tensor::ones([4], (Kind::Float, Device::Cpu)),
        );
        let want = xg.batch_norm(
            Some(&bn.weight),
            Some(&bn.bias),
            Some(&rm),
            Some(&rv),
            true,
            0.1,
            1e-5,
            false,
        );
        let got = y.index_select(0, &idx);
        assert!(got.allclose(&want, 1e-5, 1e-5, false), "group {g}");
        // Each separate BN's batch statistics, recovered from its running-stat update.
        rm /= 0.1;
        rv = (rv - 0.9) / 0.1;
        means.push(rm);
        vars.push(rv);
    }
    let m = Tensor::stack(&means, 0);
    let v = Tensor::stack(&vars, 0);
    let mu = m.mean_dim(0, false, Kind::Float);
    let pooled = v.mean_dim(0, false, Kind::Float)
        + (&m - mu.unsqueeze(0))
            .square()
            .mean_dim(0, false, Kind::Float);
    assert!(bn.running_mean.allclose(&(mu * 0.1), 1e-5, 1e-5, false));
    assert!(bn
        .running_var
        .allclose(&(pooled * 0.1 + 0.9), 1e-5, 1e-5, false));
    // One group is plain BatchNorm, running statistics included.
    let vs2 = nn::VarStore::new(Device::Cpu);
    let plain = GroupBatchNorm::new(&(vs2.root() / "bn"), 4, false).unwrap();
    let y1 = plain.forward(&x, Bn::groups(1), true).unwrap();
    let (rm, rv) = (
        Tensor::zeros([4], (Kind::Float, Device::Cpu)),
        Tensor::ones([4], (Kind::Float, Device::Cpu)),
    );
    let want = x.batch_norm(
        None::<&Tensor>,
        None::<&Tensor>,
        Some(&rm),
        Some(&rv),
        true,
        0.1,
        1e-5,
        false,
    );
    assert!(y1.allclose(&want, 1e-5, 1e-5, false));
    assert!(plain.running_mean.allclose(&rm, 1e-5, 1e-6, false));
    assert!(plain.running_var.allclose(&rv, 1e-5, 1e-6, false));
}

/// PySlowFast's precise BN with SubBatchNorm3d: fvcore's update_bn_stats takes each group's
/// population statistics over all its batches (_PopulationVarianceEstimator), then
/// misc.aggregate_sub_bn_stats combines the groups once. Two batches whose groups sit 5 apart
/// and swap places: within a batch a group is tight (variance 1), over both batches it spans
/// the shift, which the mean of batch variances (fvcore before 2021) would miss.
#[test]
fn precise_bn_takes_population_statistics_per_group_then_aggregates() {
    let vs = nn::VarStore::new(Device::Cpu);
    let bn = GroupBatchNorm::new(&(vs.root() / "bn"), 4, false).unwrap();
    let opts = (Kind::Float, Device::Cpu);
    // Group g holds the clips whose index is g mod 2.
    let shift = |g0: f64, g1: f64| {
        Tensor::from_slice(&[g0, g1, g0, g1, g0, g1])
            .to_kind(Kind::Float)
            .view([6, 1, 1, 1, 1])
    };
    let a = Tensor::randn([6, 4, 2, 3, 3], opts) + shift(5.0, 0.0);
    let b = Tensor::randn([6, 4, 2, 3, 3], opts) + shift(0.0, 5.0);
    bn.start_precise();
    for x in [&a, &b] {
        let _ = tch::no_grad(|| bn.forward(x, Bn::groups(2), true).unwrap());
    }
    bn.finish_precise().unwrap();
    // Group g's values over both batches, [c, values].
    let group = |g: i64| {
        Tensor::cat(&[a.slice(0, g, 6, 2), b.slice(0, g, 6, 2)], 0)
            .transpose(0, 1)
            .reshape([4, -1])
            .to_kind(Kind::Double)
    };
    let (mut means, mut vars) = (Vec::new(), Vec::new());
    for g in 0..2 {
        let x = group(g);
        means.push(x.mean_dim(1, false, Kind::Double));
        vars.push(x.var_dim(1, false, false));
    }
    let mu = (&means[0] + &means[1]) / 2.0;
    let spread = ((&means[0] - &mu).square() + (&means[1] - &mu).square()) / 2.0;
    let var = (&vars[0] + &vars[1]) / 2.0 + spread;
    let f = |t: &Tensor| t.to_kind(Kind::Float);
    assert!(bn.running_mean.allclose(&f(&mu), 1e-5, 1e-5, false));
    assert!(bn.running_var.allclose(&f(&var), 1e-4, 1e-4, false));
    let v = bn.running_var.mean(Kind::Float).double_value(&[]);
    assert!(
        v > 6.0,
        "running variance {v} misses the spread between batches"
    );
    // Plain BN: the population statistics of both batches together.
    bn.start_precise();
    for x in [&a, &b] {
        let _ = tch::no_grad(|| bn.forward(x, Bn::groups(1), true).unwrap());
    }
    bn.finish_precise().unwrap();
    let all = Tensor::cat(&[&a, &b], 0)
        .transpose(0, 1)
        .reshape([4, -1])
        .to_kind(Kind::Double);
    let mean = all.mean_dim(1, false, Kind::Double);
    assert!(bn.running_mean.allclose(&f(&mean), 1e-5, 1e-5, false));
    let var = all.var_dim(1, false, false);
    assert!(bn.running_var.allclose(&f(&var), 1e-4, 1e-4, false));
    // And outside precise BN the running statistics move by the momentum again.
    let before = bn.running_mean.copy();
    let _ = tch::no_grad(|| bn.forward(&a, Bn::groups(1), true).unwrap());
    let moved = (&bn.running_mean - &before).abs().max().double_value(&[]);
    assert!(moved > 0.0);
}

#[test]
fn bn_groups_that_do_not_divide_the_batch_are_an_error() {
    let vs = nn::VarStore::new(Device::Cpu);
    let bn = GroupBatchNorm::new(&(vs.root() / "bn"), 4, false).unwrap();
    let x = Tensor::randn([6, 4, 2, 3, 3], (Kind::Float, Device::Cpu));
    let e = bn.forward(&x, Bn::groups(4), true).unwrap_err();
    assert!(e.to_string().contains("bn_groups 4"), "{e}");
    assert!(bn.forward(&x, Bn::groups(0), true).is_err());
    // Evaluation ignores groups.
    assert!(bn.forward(&x, Bn::groups(4), false).is_ok());
}

/// PySlowFast's head without the short cycle: a fixed AvgPool3d of the training maps (stride
/// 1); at a larger test crop the classifier and softmax run at every position and the
/// probabilities are averaged (ResNetBasicHead in eval mode). At the training size it is the
/// global pool.
#[test]
fn fixed_head_pool_scores_fully_convolutionally() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = SlowFast::new(&vs.root(), &tiny()).unwrap();
    // Weights away from zero-init so positions differ.
    tch::no_grad(|| {
        for (name, mut v) in vs.variables() {
            if name.ends_with("weight") && name.contains("bn") {
                let _ = v.normal_(1.0, 0.2);
            }
        }
    });
    let opts = (Kind::Float, Device::Cpu);
    let input = |s: i64| {
        (
            Tensor::randn([2, 3, 2, s, s], opts),
            Tensor::randn([2, 3, 8, s, s], opts),
        )
    };
    // Trained at 8 frames x 32 px with alpha 4: maps [2, 1, 1] slow, [8, 1, 1] fast.
    let kernel = HeadPool::Fixed([[2, 1, 1], [8, 1, 1]]);
    let (slow, fast) = input(32);
    let global = tch::no_grad(|| model.eval_probs(&slow, &fast, HeadPool::Global).unwrap());
    let fixed = tch::no_grad(|| model.eval_probs(&slow, &fast, kernel).unwrap());
    let logits = tch::no_grad(|| model.forward(&slow, &fast, 1, false).unwrap());
    assert!(global.allclose(&logits.softmax(-1, Kind::Float), 1e-6, 1e-6, false));
    assert!(fixed.allclose(&global, 1e-6, 1e-6, false));
    // At 64 px the maps are 2 x 2: four positions.
    let (slow, fast) = input(64);
    let fixed = tch::no_grad(|| model.eval_probs(&slow, &fast, kernel).unwrap());
    let global = tch::no_grad(|| model.eval_probs(&slow, &fast, HeadPool::Global).unwrap());
    let vars = vs.variables();
    let want = tch::no_grad(|| {
        let x = model.features(&slow, &fast, Bn::groups(1), false).unwrap();
        let pooled = [
            x[0].avg_pool3d([2, 1, 1], [1, 1, 1], [0, 0, 0], false, true, None),
            x[1].avg_pool3d([8, 1, 1], [1, 1, 1], [0, 0, 0], false, true, None),
        ];
        assert_eq!(pooled[0].size()[2..], [1, 2, 2]);
        let feat = Tensor::cat(&pooled, 1).permute([0, 2, 3, 4, 1]);
        feat.linear(
            &vars["head.projection.weight"],
            Some(&vars["head.projection.bias"]),
        )
        .softmax(-1, Kind::Float)
        .mean_dim([1i64, 2, 3].as_slice(), false, Kind::Float)
    });
    assert!(fixed.allclose(&want, 1e-6, 1e-6, false));
    let apart = (&fixed - &global).abs().max().double_value(&[]);
    assert!(
        apart > 1e-4,
        "fully convolutional equals global pooling ({apart})"
    );
}

/// Channels-last-3d (run.memory_format) changes the layout only: the same logits and the same
/// gradients as the default layout, in training with BN groups and in evaluation.
#[test]
fn channels_last_3d_computes_what_the_default_layout_does() {
    use multigrid::model::is_channels_last_3d;
    // One set of weights and inputs for both (tests run in parallel threads, so the global seed
    // cannot make two models equal).
    let reference = nn::VarStore::new(Device::Cpu);
    SlowFast::new(&reference.root(), &tiny()).unwrap();
    let slow = Tensor::randn([4, 3, 2, 32, 32], (Kind::Float, Device::Cpu));
    let fast = Tensor::randn([4, 3, 8, 32, 32], (Kind::Float, Device::Cpu));
    let weights = Tensor::arange(12, (Kind::Float, Device::Cpu));
    let run = |channels_last: bool| {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let mut model = SlowFast::new(&vs.root(), &tiny()).unwrap();
        vs.copy(&reference).unwrap();
        model.set_channels_last(channels_last).unwrap();
        assert_eq!(model.channels_last(), channels_last);
        let w = &vs.variables()["s2.pathway0_res0.branch2.a.weight"];
        assert_eq!(is_channels_last_3d(w), channels_last);
        let logits = model.forward(&slow, &fast, 2, true).unwrap();
        (&logits * &weights).sum(Kind::Float).backward();
        let eval = tch::no_grad(|| model.forward(&slow, &fast, 1, false).unwrap());
        (logits.detach(), eval, vs)
    };
    let (train_a, eval_a, vs_a) = run(false);
    let (train_b, eval_b, vs_b) = run(true);
    // Another summation order in another layout: equal to float rounding, measured against
    // the tensor's norm. A weight gradient sums thousands of positions that cancel, which
    // leaves float32 about 1e-3 of its norm (a wrong layout would be off by its whole norm).
    let within = |tol: f64| {
        move |a: &Tensor, b: &Tensor, what: &str| {
            let norm = a.norm().double_value(&[]).max(1e-12);
            let diff = (a - b).norm().double_value(&[]);
            assert!(diff <= tol * norm, "{what}: {diff} apart (norm {norm})");
        }
    };
    let close = within(1e-4);
    close(&train_a, &train_b, "training logits");
    close(&eval_a, &eval_b, "eval logits");
    let (va, vb) = (vs_a.variables(), vs_b.variables());
    // A gradient is close to float rounding of the typical gradient's size: one that sums to
    // almost nothing (the 1-channel fast stem's BN scale) keeps the rounding of its terms.
    let typical = {
        let norms: Vec<f64> = va
            .values()
            .filter(|t| t.requires_grad())
            .map(|t| t.grad().norm().double_value(&[]))
            .collect();
        norms.iter().sum::<f64>() / norms.len() as f64
    };
    let close_grad = |a: &Tensor, b: &Tensor, what: &str| {
        let norm = a.norm().double_value(&[]);
        let diff = (a - b).norm().double_value(&[]);
        assert!(
            diff <= 1e-2 * norm + 1e-3 * typical,
            "{what}: {diff} apart (norm {norm}, typical {typical})"
        );
    };
    for (name, a) in &va {
        let b = &vb[name];
        // Parameters are as copied; the BN running statistics were updated from the batch.
        close(a, b, name);
        if a.requires_grad() {
            close_grad(&a.grad(), &b.grad(), &format!("{name} gradient"));
        }
    }
    assert!(!is_channels_last_3d(&Tensor::zeros(
        [2, 3, 4, 5, 6],
        (Kind::Float, Device::Cpu)
    )));
    let x = multigrid::model::channels_last_3d(&Tensor::zeros(
        [2, 3, 4, 5, 6],
        (Kind::Float, Device::Cpu),
    ))
    .unwrap();
    assert!(is_channels_last_3d(&x));
    assert_eq!(x.stride(), [360, 1, 90, 18, 3]);
}

/// Multiply-adds per view against the spec's analytic counts (section 3.7), which match the
/// SlowFast paper's GFLOPs: R50 8x8 50.3 G at 32 x 224^2 and 65.7 G at 32 x 256^2; 4x16
/// (alpha 8, fusion kernel 5) 36.1 G at 256^2. Below 32 pixels strided maps round up, so the
/// cost falls more slowly than crop^2.
#[test]
fn macs_match_the_published_counts() {
    let count = |c: &ModelConfig, t, s| {
        let vs = nn::VarStore::new(Device::Cpu);
        SlowFast::new(&vs.root(), c).unwrap().macs(t, s)
    };
    let r50 = ModelConfig::default();
    let near =
        |got: f64, want: f64| assert!((got / want - 1.0).abs() < 0.002, "{got:.4e} vs {want:.4e}");
    near(count(&r50, 32, 224), 50.3e9);
    near(count(&r50, 32, 256), 65.7e9);
    let r50_4x16 = ModelConfig {
        alpha: 8,
        fusion_kernel_sz: 5,
        ..ModelConfig::default()
    };
    near(count(&r50_4x16, 32, 256), 36.1e9);
    let t = tiny();
    let (full, quarter) = (count(&t, 16, 32), count(&t, 16, 16));
    assert!(quarter > 0.3 * full, "{quarter:.3e} vs {full:.3e}");
    assert!(count(&t, 8, 32) < 0.51 * full);
}

/// A single-pathway network refuses inputs it cannot take with an error naming why, before
/// libtorch fails inside a pool: too few frames for I3D's temporal pool after res2, and a
/// non-local block whose [1, 2, 2] pool does not fit res4's map at 16 pixels.
#[test]
fn single_pathway_inputs_it_cannot_take_are_named() {
    let c = ModelConfig {
        arch: multigrid::schedule::Arch::I3d,
        nonlocal_location: vec![vec![vec![]], vec![vec![]], vec![vec![1]], vec![vec![]]],
        ..tiny()
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let m = multigrid::model::Network::new(&vs.root(), &c).unwrap();
    let none = Tensor::zeros([2, 3, 0, 32, 32], (Kind::Float, Device::Cpu));
    let clip = |t: i64, s: i64| Tensor::randn([2, 3, t, s, s], (Kind::Float, Device::Cpu));
    let e = m.forward(&none, &clip(1, 32), 1, false).unwrap_err();
    assert!(e.to_string().contains("temporal pool"), "{e}");
    let e = m.forward(&none, &clip(4, 16), 1, false).unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
    assert!(e.to_string().contains("res4"), "{e}");
    let logits = tch::no_grad(|| m.forward(&none, &clip(4, 32), 1, false)).unwrap();
    assert_eq!(logits.size(), [2, 12]);
}
