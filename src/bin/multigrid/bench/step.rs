//! `multigrid bench step`: seconds per training step of our SlowFast against the same model
//! trained by PyTorch in Python on the same libtorch.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::{device, torch_message};
use crate::StepArgs;

pub fn run(a: &StepArgs) -> Result<(), String> {
    let shapes = a
        .shapes
        .iter()
        .map(|s| {
            let v: Vec<i64> = s.split('x').filter_map(|p| p.parse().ok()).collect();
            match v[..] {
                [n, t, c] if n > 0 && t > 0 && c > 0 => Ok((n, t, c)),
                _ => Err(format!("shape {s:?} is not BATCHxFRAMESxCROP")),
            }
        })
        .collect::<Result<Vec<(i64, i64, i64)>, String>>()?;
    step_bench(&StepOptions {
        depth: a.depth,
        width: a.width,
        shapes: &shapes,
        device: &a.device,
        steps: a.steps,
        autocast: a.autocast,
        memory_formats: &a.memory_format,
        python: (a.python.as_os_str() != "none").then_some(a.python.as_path()),
        cuda_graphs: a.cuda_graphs,
    })
}

struct StepOptions<'a> {
    depth: u32,
    width: u32,
    shapes: &'a [(i64, i64, i64)],
    device: &'a str,
    steps: usize,
    autocast: bool,
    /// run.memory_format values to time.
    memory_formats: &'a [String],
    python: Option<&'a Path>,
    /// Also time the step replayed from a CUDA graph.
    cuda_graphs: bool,
}

/// Seconds per SGD step of our SlowFast against the same model in PyTorch (same libtorch), for
/// each (batch, frames, crop).
fn step_bench(o: &StepOptions) -> Result<(), String> {
    use multigrid::model::SlowFast;
    use multigrid::schedule::{ModelConfig, SolverConfig};
    use multigrid::train::amp::{self, Precision};
    use multigrid::train::graphs::Graph;
    use multigrid::train::optim::{Lr, Sgd};
    use tch::{nn, Kind, Tensor};
    let device = device(o.device)?;
    let e = torch_message;
    let graph_device = match (o.cuda_graphs, device) {
        (false, _) => None,
        (true, tch::Device::Cuda(i)) => Some(i),
        (true, other) => return Err(format!("--cuda-graphs needs a CUDA device, not {other:?}")),
    };
    let precision = if o.autocast {
        Precision::Bf16
    } else {
        Precision::Fp32
    };
    // As the trainer's default; the Python reference sets the same.
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    let cfg = ModelConfig {
        depth: o.depth,
        width_per_group: o.width,
        num_classes: 400,
        ..ModelConfig::default()
    };
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let mut model = SlowFast::new(&vs.root(), &cfg).map_err(|e| e.to_string())?;
    for f in o.memory_formats {
        if !["contiguous", "channels_last_3d"].contains(&f.as_str()) {
            return Err(format!(
                "--memory-format {f:?} is not contiguous or channels_last_3d"
            ));
        }
    }
    println!(
        "training step, SlowFast depth {} width {}, {:?}{}, {} timed steps",
        o.depth,
        o.width,
        device,
        if o.autocast { ", bf16 autocast" } else { "" },
        o.steps
    );
    println!(
        "{:>16} {:>17} {:>12} {:>12} {:>8}{}",
        "batch x T x S",
        "memory format",
        "ours s/step",
        "torch s/step",
        "ratio",
        if o.cuda_graphs {
            format!(" {:>13} {:>8}", "graph s/step", "ratio")
        } else {
            String::new()
        }
    );
    for (&(n, t, s), format) in o
        .shapes
        .iter()
        .flat_map(|shape| o.memory_formats.iter().map(move |f| (shape, f)))
    {
        let channels_last = format == "channels_last_3d";
        model
            .set_channels_last(channels_last)
            .map_err(|e| e.to_string())?;
        // Gradients in the new layout, in flat buckets, as the trainer keeps them.
        let _grads = multigrid::train::grads::GradBuckets::new(
            &vs,
            multigrid::distributed::FIRST_BUCKET_BYTES,
            multigrid::distributed::BUCKET_BYTES,
        )
        .map_err(|e| e.to_string())?;
        // A fresh optimizer per row, as the reference's fresh process: momentum kept from a row
        // in the other layout would make every update mix layouts.
        let mut opt = Sgd::new(&vs, &SolverConfig::default());
        let alpha = i64::from(cfg.alpha);
        let slow = Tensor::f_randn([n, 3, t / alpha, s, s], (Kind::Float, device)).map_err(e)?;
        let fast = Tensor::f_randn([n, 3, t, s, s], (Kind::Float, device)).map_err(e)?;
        let labels = Tensor::f_randint(400, [n], (Kind::Int64, device)).map_err(e)?;
        // The learning rate a captured step reads on the device.
        let lr_t = Tensor::f_from_slice(&[0.01f32])
            .and_then(|t| t.f_reshape([]))
            .and_then(|t| t.f_to_device(device))
            .map_err(e)?;
        let mut step = |lr: Lr| -> Result<(), String> {
            let logits = amp::autocast(device, precision, || model.forward(&slow, &fast, 1, true))
                .map_err(|e| e.to_string())?;
            let loss = logits
                .f_to_kind(Kind::Float)
                .and_then(|l| {
                    l.f_cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Mean, -100, 0.0)
                })
                .map_err(e)?;
            opt.zero_grad().map_err(|e| e.to_string())?;
            loss.f_backward().map_err(e)?;
            opt.step_with(lr).map_err(|e| e.to_string())?;
            Ok(())
        };
        step(Lr::Value(0.01))?;
        step(Lr::Value(0.01))?;
        if let tch::Device::Cuda(_) = device {
            tch::Cuda::synchronize(0);
        }
        let start = Instant::now();
        for _ in 0..o.steps {
            step(Lr::Value(0.01))?;
        }
        if let tch::Device::Cuda(_) = device {
            tch::Cuda::synchronize(0);
        }
        let ours = start.elapsed().as_secs_f64() / o.steps as f64;
        let graphed = match graph_device {
            None => None,
            Some(index) => {
                // Two eager steps on the device learning rate's path first: its kernels and
                // allocations must exist before the capture.
                step(Lr::Device(&lr_t))?;
                step(Lr::Device(&lr_t))?;
                tch::Cuda::synchronize(index as i64);
                let (graph, ()) = Graph::capture(index, None, || {
                    step(Lr::Device(&lr_t)).map_err(multigrid::Error::Torch)
                })
                .map_err(|e| format!("capturing the step: {e}"))?;
                graph.replay().map_err(|e| e.to_string())?;
                tch::Cuda::synchronize(index as i64);
                let start = Instant::now();
                for _ in 0..o.steps {
                    graph.replay().map_err(|e| e.to_string())?;
                }
                tch::Cuda::synchronize(index as i64);
                Some(start.elapsed().as_secs_f64() / o.steps as f64)
            }
        };
        let torch = match o.python {
            Some(py) => {
                let arg = serde_json::json!({
                    "model": cfg, "batch": n, "frames": t, "crop": s, "alpha": alpha,
                    "device": o.device.replace("auto", if tch::Cuda::is_available() { "cuda" } else { "cpu" }),
                    "steps": o.steps, "autocast": o.autocast, "channels_last": channels_last,
                });
                let out = Command::new(py)
                    .arg("scripts/step_reference.py")
                    .arg(arg.to_string())
                    .output()
                    .map_err(|e| format!("cannot run {}: {e}", py.display()))?;
                if !out.status.success() {
                    return Err(format!(
                        "step_reference.py: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                let v: serde_json::Value =
                    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
                v["seconds_per_step"].as_f64()
            }
            None => None,
        };
        let ratio = |x: f64| torch.map_or("-".into(), |t| format!("{:.2}", x / t));
        println!(
            "{:>16} {format:>17} {:>12.4} {:>12} {:>8}{}",
            format!("{n} x {t} x {s}"),
            ours,
            torch.map_or("-".into(), |t| format!("{t:.4}")),
            ratio(ours),
            graphed.map_or(String::new(), |g| format!(" {g:>13.4} {:>8}", ratio(g)))
        );
    }
    Ok(())
}
