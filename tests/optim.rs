//! Proof that training learns: our SGD equals torch.optim.SGD step for step, and the trainer's
//! step drives the loss of a fixed batch down (which a no-op optimizer cannot).
#![cfg(feature = "torch")]

mod common;

use std::path::PathBuf;

use multigrid::schedule::SolverConfig;
use multigrid::train::optim::Sgd;
use tch::{nn, Device, Kind, Tensor};

fn python() -> PathBuf {
    std::env::var_os("MG_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo().join(".venv/bin/python"))
}

/// Twenty steps of momentum 0.9 with Nesterov, weight decay on conv and FC parameters and none
/// on BN ones, an LR that changes every step, from the same parameters and gradients: our
/// parameters equal torch.optim.SGD's, both its per-parameter loop (foreach=False) and its
/// multi-tensor kernels (foreach=True, what ours calls), within 1e-6 relative after every
/// step's update is applied (compared at the end, where errors would have accumulated).
#[test]
fn sgd_equals_torch_optim_sgd() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sgd_reference");
    std::fs::create_dir_all(&dir).unwrap();
    for (nesterov, dampening) in [(true, 0.0), (false, 0.0), (false, 0.3)] {
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        // Names that PySlowFast's grouping sorts both ways.
        let shapes: [(&str, &[i64]); 5] = [
            ("s1.pathway0_stem.conv.weight", &[4, 3, 1, 3, 3]),
            ("s1.pathway0_stem.bn.weight", &[4]),
            ("s2.pathway0_res0.branch2.a_bn.bias", &[4]),
            ("head.projection.weight", &[5, 4]),
            ("head.projection.bias", &[5]),
        ];
        for (name, shape) in shapes {
            let (path, leaf) = name.rsplit_once('.').unwrap();
            let p = path.split('.').fold(root.clone(), |p, c| p / c);
            let _ = p.var(
                leaf,
                shape,
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            );
        }
        let solver = SolverConfig {
            momentum: 0.9,
            nesterov,
            dampening,
            weight_decay: 1e-2,
            ..SolverConfig::default()
        };
        let mut opt = Sgd::new(&vs, &solver);
        let vars = vs.variables();
        let mut saved: Vec<(String, Tensor)> = vars
            .iter()
            .map(|(n, t)| (format!("param.{n}"), t.detach().copy()))
            .collect();
        let steps = 20;
        let lrs: Vec<f64> = (0..steps)
            .map(|k| 0.1 * (1.0 + (k as f64 * 0.7).sin()))
            .collect();
        for (k, lr) in lrs.iter().enumerate() {
            for (name, t) in &vars {
                let g = Tensor::randn(t.size(), (Kind::Float, Device::Cpu));
                saved.push((format!("grad.{k}.{name}"), g.copy()));
                let mut grad = t.grad();
                if grad.defined() {
                    grad.copy_(&g);
                } else {
                    // The first backward of a leaf creates its gradient; do the same.
                    let y = (t * &g).sum(Kind::Float);
                    y.backward();
                }
            }
            opt.step(*lr).unwrap();
        }
        saved.push((
            "lrs".to_string(),
            Tensor::from_slice(&lrs).to_kind(Kind::Double),
        ));
        let inputs = dir.join("in.safetensors");
        let refs: Vec<(&str, &Tensor)> = saved.iter().map(|(n, t)| (n.as_str(), t)).collect();
        Tensor::write_safetensors(&refs, &inputs).unwrap();
        for foreach in [false, true] {
            let config = dir.join("solver.json");
            std::fs::write(
                &config,
                serde_json::json!({"momentum": 0.9, "nesterov": nesterov, "dampening": dampening,
                                   "weight_decay": 1e-2, "foreach": foreach})
                .to_string(),
            )
            .unwrap();
            let out = dir.join("out.safetensors");
            let status = std::process::Command::new(python())
                .arg(common::repo().join("scripts/sgd_reference.py"))
                .args([&inputs, &config, &out])
                .status()
                .unwrap();
            assert!(status.success(), "sgd_reference.py failed");
            let want: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&out)
                .unwrap()
                .into_iter()
                .collect();
            assert_eq!(want.len(), vars.len());
            for (name, got) in &vars {
                let w = &want[&format!("param.{name}")];
                let rel = ((got - w).abs().max() / w.abs().max()).double_value(&[]);
                assert!(
                    rel < 1e-6,
                    "nesterov {nesterov} dampening {dampening} foreach {foreach}: {name} differs by {rel} relative"
                );
            }
        }
    }
}

/// A parameter whose gradient first appears after other parameters have stepped gets its own
/// first momentum step (buffer = its first direction), as torch.optim.SGD's clone gives it: one
/// kernel call for the parameters that have buffers, another for the one that starts.
#[test]
fn a_late_gradient_starts_its_own_momentum() {
    let vs = nn::VarStore::new(Device::Cpu);
    let a = (vs.root() / "a").var("weight", &[3], nn::Init::Const(1.0));
    let b = (vs.root() / "b").var("weight", &[3], nn::Init::Const(1.0));
    let solver = SolverConfig {
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
        ..SolverConfig::default()
    };
    let mut opt = Sgd::new(&vs, &solver);
    (&a * 2.0).sum(Kind::Float).backward();
    opt.step(0.1).unwrap();
    // a: buf = 2, a = 1 - 0.2.
    opt.zero_grad().unwrap();
    ((&a + &b) * 1.0).sum(Kind::Float).backward();
    opt.step(0.1).unwrap();
    // a: buf = 0.9 * 2 + 1 = 2.8, a = 0.8 - 0.28; b: buf = 1, b = 1 - 0.1.
    let close = |t: &Tensor, v: f64| (t - v).abs().max().double_value(&[]) < 1e-6;
    assert!(close(&a, 0.52), "{a}");
    assert!(close(&b, 0.9), "{b}");
    let state: Vec<String> = opt.state().into_iter().map(|(n, _)| n).collect();
    assert_eq!(state, ["a.weight", "b.weight"]);
}

/// The trainer's own step (forward, cross-entropy, backward, SGD) on one fixed batch of the
/// tiny SlowFast: the loss falls below a quarter of its start within 40 steps. With the update
/// switched off (LR 0, the same path otherwise) it does not, so the test can fail.
#[test]
fn loss_on_a_fixed_batch_falls() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("loss_falls");
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");
    common::gen_store(&data, 8);
    let run = |lr: f64, out: &str| -> (f64, f64) {
        let config = serde_json::json!({
            "data": {"num_frames": 8, "sampling_rate": 1, "train_jitter_scales": [34, 40],
                     "train_crop_size": 32, "test_crop_size": 32},
            "train": {"batch_size": 4},
            "solver": {"base_lr": 0.05, "lrs": [1], "steps": [0], "max_epoch": 1,
                       "warmup_epochs": 0.0},
            "model": {"depth": 18, "width_per_group": 8, "alpha": 2, "num_classes": 4,
                      "dropout_rate": 0.0},
            "run": {"device": "cpu", "data_dir": data, "seed": 3}
        });
        let c: multigrid::Config = serde_json::from_value(config).unwrap();
        let mut t = multigrid::train::Trainer::new(c, &root.join(out)).unwrap();
        tch::manual_seed(11);
        let slow = Tensor::randn([4, 3, 4, 32, 32], (Kind::Float, Device::Cpu));
        let fast = Tensor::randn([4, 3, 8, 32, 32], (Kind::Float, Device::Cpu));
        let labels = Tensor::from_slice(&[0i64, 1, 2, 3]);
        let mut losses = Vec::new();
        for step in 0..40 {
            losses.push(t.train_step(&slow, &fast, &labels, 1, lr, step).unwrap());
        }
        let tail = losses[35..].iter().sum::<f64>() / 5.0;
        (losses[0], tail)
    };
    let (start, end) = run(0.05, "sgd");
    eprintln!("loss with SGD: {start:.4} -> {end:.4} (mean of steps 36-40)");
    assert!(
        end < 0.25 * start,
        "the loss went from {start:.4} to {end:.4}: not below a quarter"
    );
    let (start0, end0) = run(0.0, "no_update");
    eprintln!("loss without updates: {start0:.4} -> {end0:.4}");
    assert!(
        end0 > 0.9 * start0,
        "without updates the loss still fell, {start0:.4} to {end0:.4}: the test cannot tell"
    );
}

/// The learning rate a captured CUDA graph reads on the device (`Lr::Device`) steps as the
/// value does, with momentum, Nesterov and weight decay, over changing learning rates.
#[test]
fn a_learning_rate_read_on_the_device_steps_as_the_value_does() {
    use multigrid::train::optim::Lr;
    let build = || {
        tch::manual_seed(11);
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        let _ = (&root / "conv").var("weight", &[4, 3, 3], init);
        let _ = (&root / "conv_bn").var("weight", &[4], init);
        vs
    };
    for nesterov in [false, true] {
        let (a, b) = (build(), build());
        let solver = SolverConfig {
            momentum: 0.9,
            nesterov,
            weight_decay: 1e-2,
            ..SolverConfig::default()
        };
        let (mut by_value, mut on_device) = (Sgd::new(&a, &solver), Sgd::new(&b, &solver));
        let lr_t = Tensor::zeros([], (Kind::Float, Device::Cpu));
        for k in 0..10 {
            let lr = 0.1 * (1.0 + (k as f64 * 0.7).sin());
            for (vs, seed) in [(&a, k), (&b, k)] {
                tch::manual_seed(100 + seed);
                let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
                vars.sort_by(|x, y| x.0.cmp(&y.0));
                for (_, mut t) in vars {
                    let g = Tensor::randn(t.size(), (Kind::Float, Device::Cpu));
                    let y = (&t * &g).sum(Kind::Float);
                    t.zero_grad();
                    y.backward();
                }
            }
            by_value.step(lr).unwrap();
            let _ = lr_t.shallow_clone().fill_(lr);
            on_device.step_with(Lr::Device(&lr_t)).unwrap();
        }
        let (va, vb) = (a.variables(), b.variables());
        for (name, x) in &va {
            let rel = ((x - &vb[name]).abs().max() / x.abs().max()).double_value(&[]);
            assert!(
                rel < 1e-6,
                "nesterov {nesterov}: {name} differs by {rel} relative"
            );
        }
    }
}
