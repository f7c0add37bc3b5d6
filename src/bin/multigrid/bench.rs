//! `multigrid bench collate`: clips/s of the fused collator at the Kinetics multigrid shapes,
//! against the same work done by PyTorch in Python in the same run, and the output rate against
//! this machine's memcpy bandwidth.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use multigrid::collate::{self, batch_len, resized_size, Clip, ClipParams, Normalize, Rng};

const SRC_H: u32 = 256;
const SRC_W: u32 = 340;
const SRC_FRAMES: u32 = 64;

/// (T, S, short-side jitter) of the three Kinetics shapes: baseline, stage 0 short cycle,
/// and 158 px.
const SHAPES: [(u32, u32, [u32; 2]); 3] = [
    (32, 224, [256, 320]),
    (8, 112, [128, 320]),
    (16, 158, [181, 320]),
];

pub struct Options<'a> {
    pub clips: usize,
    pub threads: usize,
    pub seconds: f64,
    pub python: &'a Path,
    pub script: &'a Path,
    pub work_dir: &'a Path,
}

pub fn collate_bench(o: &Options) -> Result<(), String> {
    collate::set_num_threads(o.threads).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(o.work_dir).map_err(|e| format!("{}: {e}", o.work_dir.display()))?;
    let mut rng = Rng::new(1, 0, 0);
    let frame_bytes = (SRC_FRAMES * SRC_H * SRC_W * 3) as usize;
    let raw: Vec<u8> = (0..frame_bytes * o.clips)
        .map(|_| (rng.next_u64() >> 56) as u8)
        .collect();
    let frames_file = o.work_dir.join("bench_frames.u8");
    std::fs::write(&frames_file, &raw).map_err(|e| format!("{}: {e}", frames_file.display()))?;
    let memcpy = memcpy_gbps(o.seconds);
    println!(
        "collation from {SRC_W}x{SRC_H} u8 frames, {} clips per batch, {} threads; memcpy {memcpy:.2} GB/s",
        o.clips, o.threads
    );
    println!(
        "{:>12} {:>14} {:>14} {:>8} {:>12} {:>12}",
        "shape T x S", "ours clips/s", "torch clips/s", "ratio", "ours GB/s", "vs memcpy"
    );
    for (t, s, jitter) in SHAPES {
        let params: Vec<ClipParams> = (0..o.clips)
            .map(|_| {
                collate::train_params(
                    &mut rng,
                    SRC_FRAMES,
                    SRC_H,
                    SRC_W,
                    t,
                    s,
                    [2, 2],
                    jitter,
                    false,
                    true,
                )
            })
            .collect();
        let clips: Vec<Clip> = raw
            .chunks_exact(frame_bytes)
            .map(|f| Clip {
                frames: f,
                num_frames: SRC_FRAMES,
                height: SRC_H,
                width: SRC_W,
            })
            .collect();
        let mut out = vec![0f32; batch_len(o.clips, t, s)];
        let norm = Normalize::default();
        let ours = rate(o.seconds, o.clips, || {
            collate::collate_explicit(&clips, &params, t, s, &norm, &mut out)
                .map_err(|e| e.to_string())
        })?;
        let torch = torch_rate(o, &frames_file, frame_bytes, t, s, &params)?;
        let gbps = ours * (batch_len(1, t, s) * 4) as f64 / 1e9;
        println!(
            "{:>12} {:>14.1} {:>14.1} {:>7.2}x {:>12.2} {:>11.2}x",
            format!("{t} x {s}"),
            ours,
            torch,
            ours / torch,
            gbps,
            memcpy / gbps
        );
        // Sanity: every crop fits its resized frame.
        debug_assert!(params.iter().all(|p| {
            let (h, w) = resized_size(SRC_H, SRC_W, p.short_side);
            p.crop_x + s <= w && p.crop_y + s <= h
        }));
    }
    Ok(())
}

fn rate(
    seconds: f64,
    clips: usize,
    mut f: impl FnMut() -> Result<(), String>,
) -> Result<f64, String> {
    f()?; // warm-up
    let start = Instant::now();
    let mut reps = 0;
    while reps < 3 || start.elapsed() < Duration::from_secs_f64(seconds) {
        f()?;
        reps += 1;
    }
    Ok((reps * clips) as f64 / start.elapsed().as_secs_f64())
}

fn torch_rate(
    o: &Options,
    frames: &Path,
    frame_bytes: usize,
    t: u32,
    s: u32,
    params: &[ClipParams],
) -> Result<f64, String> {
    let clips: Vec<_> = params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            serde_json::json!({
                "offset": i * frame_bytes, "num_frames": SRC_FRAMES, "height": SRC_H, "width": SRC_W,
                "start_frame": p.start_frame, "stride": p.stride, "short_side": p.short_side,
                "crop_x": p.crop_x, "crop_y": p.crop_y, "flip": p.flip,
            })
        })
        .collect();
    let spec = serde_json::json!({
        "frames_file": frames, "num_frames": t, "crop_size": s, "mean": [0.45, 0.45, 0.45], "std": [0.225, 0.225, 0.225],
        "clips": clips, "threads": o.threads, "min_seconds": o.seconds,
    });
    let spec_file = o.work_dir.join(format!("bench_{t}_{s}.json"));
    std::fs::write(&spec_file, spec.to_string()).map_err(|e| e.to_string())?;
    let out = Command::new(o.python)
        .arg(o.script)
        .arg("bench")
        .arg(&spec_file)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", o.python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            o.script.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    v["clips_per_s"]
        .as_f64()
        .ok_or_else(|| "no clips_per_s from the PyTorch bench".into())
}

/// Single-threaded memcpy bandwidth over a buffer well beyond the caches: bytes written per s.
pub fn memcpy_gbps(seconds: f64) -> f64 {
    let n = 64 << 20;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    dst.copy_from_slice(&src);
    let start = Instant::now();
    let mut reps = 0;
    while reps < 3 || start.elapsed() < Duration::from_secs_f64(seconds / 2.0) {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
        reps += 1;
    }
    (reps * n) as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// Clips/s of the loader over the first `steps` steps of a plan, from the video list and from
/// the clip store of the same split.
pub fn loader_bench(
    config: &Path,
    data: &Path,
    split: &str,
    workers: usize,
    steps: u64,
) -> Result<(), String> {
    use multigrid::data::{Dataset, Loader, LoaderOptions};
    use std::sync::Arc;
    let schedule =
        multigrid::Schedule::new(multigrid::Config::from_file(config).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let mut sources = Vec::new();
    if data.join(format!("{split}.csv")).exists() {
        sources.push((
            "mp4 (decode)",
            Dataset::video_list(data, split).map_err(|e| e.to_string())?,
        ));
    }
    let store = data.join(format!("{split}.mgstore"));
    if store.exists() {
        sources.push((
            "clip store",
            Dataset::store(&store).map_err(|e| e.to_string())?,
        ));
    }
    if sources.is_empty() {
        return Err(format!(
            "{} has neither {split}.csv nor {split}.mgstore",
            data.display()
        ));
    }
    println!(
        "loader: {} workers, first {steps} steps of {}",
        workers,
        config.display()
    );
    println!(
        "{:>14} {:>10} {:>10} {:>12} {:>10}",
        "source", "clips", "seconds", "clips/s", "failures"
    );
    for (name, dataset) in sources {
        let plan = Arc::new(
            multigrid::Plan::new(&schedule, dataset.len() as u64, 1, 0, 0)
                .map_err(|e| e.to_string())?,
        );
        let steps = steps.min(plan.total_steps());
        let options = LoaderOptions {
            workers,
            ..LoaderOptions::default()
        };
        let start = Instant::now();
        let mut loader =
            Loader::new(plan, Arc::new(dataset), 0..steps, options).map_err(|e| e.to_string())?;
        let mut clips = 0;
        while let Some(b) = loader.next_batch() {
            clips += b.map_err(|e| e.to_string())?.len();
        }
        let secs = start.elapsed().as_secs_f64();
        let stats = loader.stats();
        println!(
            "{name:>14} {clips:>10} {secs:>10.2} {:>12.1} {:>10}",
            clips as f64 / secs,
            stats.failures
        );
    }
    Ok(())
}

/// Options of `multigrid bench step`.
#[cfg(feature = "torch")]
pub struct StepOptions<'a> {
    pub depth: u32,
    pub width: u32,
    pub shapes: &'a [(i64, i64, i64)],
    pub device: &'a str,
    pub steps: usize,
    pub autocast: bool,
    /// run.memory_format values to time.
    pub memory_formats: &'a [String],
    pub python: Option<&'a Path>,
}

/// Seconds per SGD step of our SlowFast against the same model in PyTorch (same libtorch), for
/// each (batch, frames, crop).
#[cfg(feature = "torch")]
pub fn step_bench(o: &StepOptions) -> Result<(), String> {
    use multigrid::model::SlowFast;
    use multigrid::schedule::{ModelConfig, SolverConfig};
    use multigrid::train::amp::{self, Precision};
    use multigrid::train::optim::Sgd;
    use tch::{nn, Kind, Tensor};
    let device = multigrid::train::parse_device(o.device).map_err(|e| e.to_string())?;
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
        "{:>16} {:>17} {:>12} {:>12} {:>8}",
        "batch x T x S", "memory format", "ours s/step", "torch s/step", "ratio"
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
        // A fresh optimizer per row, as the reference's fresh process: momentum kept from a row
        // in the other layout would make every update mix layouts.
        let mut opt = Sgd::new(&vs, &SolverConfig::default());
        let alpha = i64::from(cfg.alpha);
        let slow = Tensor::randn([n, 3, t / alpha, s, s], (Kind::Float, device));
        let fast = Tensor::randn([n, 3, t, s, s], (Kind::Float, device));
        let labels = Tensor::randint(400, [n], (Kind::Int64, device));
        let mut step = || -> Result<(), String> {
            let logits = amp::autocast(device, precision, || model.forward(&slow, &fast, 1, true))
                .map_err(|e| e.to_string())?;
            let loss = logits
                .to_kind(Kind::Float)
                .cross_entropy_for_logits(&labels);
            opt.zero_grad();
            loss.backward();
            opt.step(0.01);
            Ok(())
        };
        step()?;
        step()?;
        if let tch::Device::Cuda(_) = device {
            tch::Cuda::synchronize(0);
        }
        let start = Instant::now();
        for _ in 0..o.steps {
            step()?;
        }
        if let tch::Device::Cuda(_) = device {
            tch::Cuda::synchronize(0);
        }
        let ours = start.elapsed().as_secs_f64() / o.steps as f64;
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
        println!(
            "{:>16} {format:>17} {:>12.4} {:>12} {:>8}",
            format!("{n} x {t} x {s}"),
            ours,
            torch.map_or("-".into(), |t| format!("{t:.4}")),
            torch.map_or("-".into(), |t| format!("{:.2}", ours / t))
        );
    }
    Ok(())
}
