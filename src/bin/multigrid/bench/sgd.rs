//! `multigrid bench sgd`: our SGD against torch.optim.SGD, equal updates and their time.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::{device, torch_message};
use crate::SgdArgs;

/// Our SGD against torch.optim.SGD on `device` (foreach=True, or fused=True): twenty updates
/// of a tiny SlowFast's parameters from the same gradients and LRs, the largest relative
/// difference after them (PASS within 1e-6); then the seconds of one update of SlowFast R50's
/// parameters (34.6M) for both, and their ratio.
pub fn run(o: &SgdArgs) -> Result<(), String> {
    use multigrid::model::SlowFast;
    use multigrid::schedule::{ModelConfig, SolverConfig};
    use multigrid::train::optim::Sgd;
    use tch::{nn, Kind, Tensor};
    let device = device(&o.device)?;
    std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
    let e = torch_message;
    let solver = SolverConfig {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 1e-4,
        ..SolverConfig::default()
    };
    let kind = if o.fused { "fused" } else { "foreach" };
    let device_name = match device {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    };
    // Equality: the tiny network's parameters, gradients drawn on the CPU (the same numbers on
    // every device), an LR that changes every step.
    let tiny = ModelConfig {
        depth: 18,
        width_per_group: 8,
        num_classes: 12,
        ..ModelConfig::default()
    };
    tch::manual_seed(3);
    let vs = nn::VarStore::new(device);
    SlowFast::new(&vs.root(), &tiny).map_err(|e| e.to_string())?;
    let mut opt = Sgd::new(&vs, &solver);
    opt.set_fused(o.fused);
    // The parameters; BN's running statistics are variables without gradients.
    let trainable = |vs: &nn::VarStore| -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let vars = trainable(&vs);
    let mut saved: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(n, t)| {
            let host = t.f_detach()?.f_to_device(tch::Device::Cpu)?;
            let mut copy = host.f_zeros_like()?;
            copy.f_copy_(&host)?;
            Ok((format!("param.{n}"), copy))
        })
        .collect::<Result<_, tch::TchError>>()
        .map_err(e)?;
    let lrs: Vec<f64> = (0..20)
        .map(|k| 0.1 * (1.0 + (k as f64 * 0.7).sin()))
        .collect();
    for (k, lr) in lrs.iter().enumerate() {
        let mut first = Vec::new();
        for (name, t) in &vars {
            let g = Tensor::f_randn(t.size(), (Kind::Float, tch::Device::Cpu)).map_err(e)?;
            let mut copy = g.f_zeros_like().map_err(e)?;
            copy.f_copy_(&g).map_err(e)?;
            saved.push((format!("grad.{k}.{name}"), copy));
            let g = g.f_to_device(device).map_err(e)?;
            let mut grad = t.f_grad().map_err(e)?;
            if grad.defined() {
                grad.f_copy_(&g).map_err(e)?;
            } else {
                first.push(t.f_mul(&g).and_then(|x| x.f_sum(Kind::Float)).map_err(e)?);
            }
        }
        if !first.is_empty() {
            // The first backward of a leaf creates its gradient.
            let total = first
                .iter()
                .try_fold(
                    Tensor::f_zeros([], (Kind::Float, device)).map_err(e)?,
                    |a, b| a.f_add(b),
                )
                .map_err(e)?;
            total.f_backward().map_err(e)?;
        }
        opt.step(*lr).map_err(|e| e.to_string())?;
    }
    let lrs = Tensor::f_from_slice(&lrs)
        .and_then(|t| t.f_to_kind(Kind::Double))
        .map_err(e)?;
    saved.push(("lrs".into(), lrs));
    let inputs = o.out.join("sgd_in.safetensors");
    let refs: Vec<(&str, &Tensor)> = saved.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&refs, &inputs).map_err(e)?;
    let config = o.out.join("sgd_solver.json");
    let spec = serde_json::json!({"momentum": 0.9, "nesterov": true, "dampening": 0.0,
        "weight_decay": 1e-4, "foreach": !o.fused, "fused": o.fused, "device": device_name});
    std::fs::write(&config, spec.to_string()).map_err(|e| e.to_string())?;
    let out = o.out.join("sgd_out.safetensors");
    let script = Path::new("scripts/sgd_reference.py");
    let run = Command::new(&o.python)
        .arg(script)
        .args([&inputs, &config, &out])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", o.python.display()))?;
    if !run.status.success() {
        return Err(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&run.stderr)
        ));
    }
    let want: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&out)
        .map_err(e)?
        .into_iter()
        .collect();
    let mut worst: f64 = 0.0;
    for (name, got) in &vars {
        let w = want
            .get(&format!("param.{name}"))
            .ok_or_else(|| format!("the reference has no {name}"))?;
        let largest = |t: &Tensor| t.f_abs()?.f_max()?.f_double_value(&[]);
        let diff = got
            .f_to_device(tch::Device::Cpu)
            .and_then(|g| g.f_sub(w))
            .and_then(|d| largest(&d))
            .map_err(e)?;
        let rel = diff / largest(w).map_err(e)?;
        worst = worst.max(rel);
    }
    let verdict = if worst < 1e-6 { "PASS" } else { "FAIL" };
    println!(
        "{verdict} sgd-equal {device_name} {kind}: 20 updates of {} tensors, largest relative difference {worst:.2e} (within 1e-6)",
        vars.len()
    );
    // Time: one update of R50's parameters with gradients in place.
    let r50 = ModelConfig {
        depth: 50,
        width_per_group: 64,
        num_classes: 400,
        ..ModelConfig::default()
    };
    let vs = nn::VarStore::new(device);
    SlowFast::new(&vs.root(), &r50).map_err(|e| e.to_string())?;
    let mut opt = Sgd::new(&vs, &solver);
    opt.set_fused(o.fused);
    let mut total = Tensor::f_zeros([], (Kind::Float, device)).map_err(e)?;
    for (_, t) in trainable(&vs) {
        total = total.f_add(&t.f_sum(Kind::Float).map_err(e)?).map_err(e)?;
    }
    total.f_backward().map_err(e)?;
    let sync = || {
        if let tch::Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    for _ in 0..2 {
        opt.step(1e-6).map_err(|e| e.to_string())?;
    }
    sync();
    let start = Instant::now();
    for _ in 0..o.steps {
        opt.step(1e-6).map_err(|e| e.to_string())?;
    }
    sync();
    let ours = start.elapsed().as_secs_f64() / o.steps as f64;
    let params = trainable(&vs);
    let numel: i64 = params.iter().map(|(_, t)| t.numel() as i64).sum();
    let spec = serde_json::json!({"time": true, "momentum": 0.9, "nesterov": true,
        "dampening": 0.0, "weight_decay": 1e-4, "foreach": !o.fused, "fused": o.fused,
        "device": device_name, "steps": o.steps,
        "shapes": params.iter().map(|(n, t)| (n.clone(), t.size())).collect::<Vec<_>>()});
    std::fs::write(&config, spec.to_string()).map_err(|e| e.to_string())?;
    let run = Command::new(&o.python)
        .arg(script)
        .arg("--time")
        .arg(&config)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", o.python.display()))?;
    if !run.status.success() {
        return Err(format!(
            "{} --time failed: {}",
            script.display(),
            String::from_utf8_lossy(&run.stderr)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).map_err(|e| e.to_string())?;
    let theirs = v["seconds_per_update"]
        .as_f64()
        .ok_or("no seconds_per_update from the reference")?;
    println!(
        "sgd-time {device_name} {kind}: one update of {numel} parameters in {} tensors: ours {ours:.6} s, torch {theirs:.6} s, ratio {:.2}",
        params.len(),
        ours / theirs
    );
    Ok(())
}
