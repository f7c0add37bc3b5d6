//! `multigrid bench collate`: clips/s of the fused collator at the Kinetics multigrid shapes,
//! against the same work done by PyTorch in Python in the same run, and the output rate against
//! this machine's memcpy bandwidth.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use multigrid::collate::{self, batch_len, resized_size, Clip, ClipParams, Normalize, Rng};
use multigrid::data::Dataset;

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

/// Options of `multigrid bench loader`.
pub struct LoaderBench<'a> {
    pub config: &'a Path,
    pub data: &'a Path,
    pub split: &'a str,
    pub workers: usize,
    pub steps: u64,
    /// Config overrides (`--set`).
    pub set: &'a [String],
    /// One core's clips/s per shape: (clips timed per shape, a GPU's seconds per step).
    pub per_shape: Option<(usize, f64)>,
}

/// The sources of one split that `data` holds: its video list, clip store and frame store.
fn loader_sources(data: &Path, split: &str) -> Result<Vec<(&'static str, Dataset)>, String> {
    let mut sources = Vec::new();
    if data.join(format!("{split}.csv")).exists() {
        sources.push((
            "mp4 (decode)",
            Dataset::video_list(data, split).map_err(|e| e.to_string())?,
        ));
    }
    for (name, ext) in [("clip store", "mgstore"), ("jpeg frames", "mgframes")] {
        let store = data.join(format!("{split}.{ext}"));
        if store.exists() {
            sources.push((name, Dataset::store(&store).map_err(|e| e.to_string())?));
        }
    }
    if sources.is_empty() {
        return Err(format!(
            "{} has none of {split}.csv, {split}.mgstore, {split}.mgframes",
            data.display()
        ));
    }
    Ok(sources)
}

/// Clips/s of the loader over the first `steps` steps of a plan from each source of the same
/// split; with `per_shape`, one core's clips/s at each of the plan's shapes instead.
pub fn loader_bench(o: &LoaderBench) -> Result<(), String> {
    use multigrid::data::{Loader, LoaderOptions};
    use std::sync::Arc;
    let mut config = multigrid::Config::from_file(o.config).map_err(|e| e.to_string())?;
    config
        .apply_overrides(o.set)
        .map_err(|e| format!("{} with --set: {e}", o.config.display()))?;
    let schedule = multigrid::Schedule::new(config).map_err(|e| e.to_string())?;
    let sources = loader_sources(o.data, o.split)?;
    if let Some((clips, gpu_step_s)) = o.per_shape {
        return per_shape_bench(&schedule, sources, clips, gpu_step_s);
    }
    println!(
        "loader: {} workers, first {} steps of {}",
        o.workers,
        o.steps,
        o.config.display()
    );
    println!(
        "{:>14} {:>10} {:>10} {:>12} {:>14} {:>10}",
        "source", "clips", "seconds", "clips/s", "first batch s", "failures"
    );
    for (name, dataset) in sources {
        let plan = Arc::new(
            multigrid::Plan::new(&schedule, dataset.len() as u64, 1, 0, 0)
                .map_err(|e| e.to_string())?,
        );
        let steps = o.steps.min(plan.total_steps());
        let options = LoaderOptions {
            workers: o.workers,
            queue_clips: schedule.config().run.queue_clips,
            ..LoaderOptions::default()
        };
        let start = Instant::now();
        let mut loader =
            Loader::new(plan, Arc::new(dataset), 0..steps, options).map_err(|e| e.to_string())?;
        let mut clips = 0;
        let mut first = None;
        while let Some(b) = loader.next_batch() {
            clips += b.map_err(|e| e.to_string())?.len();
            first.get_or_insert(start.elapsed().as_secs_f64());
        }
        let secs = start.elapsed().as_secs_f64();
        let stats = loader.stats();
        println!(
            "{name:>14} {clips:>10} {secs:>10.2} {:>12.1} {:>14.2} {:>10}",
            clips as f64 / secs,
            first.unwrap_or(0.0),
            stats.failures
        );
    }
    Ok(())
}

/// Bytes on disk and hours of video of a source (frame rates as recorded; 30 fps where a store
/// recorded none).
fn bytes_and_hours(d: &Dataset) -> Result<(u64, f64), String> {
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let seconds = |frames: u32, fps: Option<f64>| f64::from(frames) / fps.unwrap_or(30.0);
    match d {
        Dataset::Store(s) => {
            let mut secs = 0.0;
            for i in 0..s.len() {
                let c = s.info(i).map_err(|e| e.to_string())?;
                secs += seconds(c.num_frames, c.fps());
            }
            Ok((size(s.path())?, secs / 3600.0))
        }
        Dataset::Frames(s) => {
            let mut secs = 0.0;
            for i in 0..s.len() {
                let c = s.info(i).map_err(|e| e.to_string())?;
                secs += seconds(c.num_frames, c.fps());
            }
            Ok((size(s.path())?, secs / 3600.0))
        }
        Dataset::VideoList { entries, .. } => {
            let (mut bytes, mut secs) = (0, 0.0);
            for (path, _) in entries {
                bytes += size(path)?;
                secs += video_seconds(path)?;
            }
            Ok((bytes, secs / 3600.0))
        }
        Dataset::FrameLists(_) => Err("frame lists are not timed here".into()),
    }
}

#[cfg(feature = "video")]
fn video_seconds(path: &Path) -> Result<f64, String> {
    let info = multigrid::data::video::probe(path).map_err(|e| e.to_string())?;
    Ok(f64::from(info.num_frames) / info.fps)
}

#[cfg(not(feature = "video"))]
fn video_seconds(path: &Path) -> Result<f64, String> {
    Err(format!(
        "{}: this build has no video decoding",
        path.display()
    ))
}

/// One core's clips/s at every distinct (batch, frames, crop) of the plan, for each source: the
/// first `clips` clips of the first step of each shape, collated on this thread with one
/// collation thread. Then the cores one GPU needs per source at `gpu_step_s` per step.
fn per_shape_bench(
    schedule: &multigrid::Schedule,
    sources: Vec<(&'static str, Dataset)>,
    clips: usize,
    gpu_step_s: f64,
) -> Result<(), String> {
    use multigrid::data::dataset::{batch_spec, load_clips};
    collate::set_num_threads(1).map_err(|e| e.to_string())?;
    let alpha = schedule.config().model.alpha;
    println!("one core, {clips} clips per shape and source; a GPU step takes {gpu_step_s} s");
    println!(
        "{:>12} {:>16} {:>12} {:>12}",
        "source", "bytes/hour", "MB", "hours"
    );
    for (name, d) in &sources {
        match bytes_and_hours(d) {
            Ok((bytes, hours)) => println!(
                "{name:>12} {:>14.2}GB {:>12.1} {hours:>12.3}",
                bytes as f64 / hours / 1e9,
                bytes as f64 / 1e6
            ),
            Err(e) => println!("{name:>12} {e}"),
        }
    }
    let names: Vec<&str> = sources.iter().map(|s| s.0).collect();
    print!("{:>16}", "B x T x S");
    for n in &names {
        print!(" {:>14}", format!("{n} c/s"));
    }
    for n in &names {
        print!(
            " {:>12}",
            format!("{} cores", n.split(' ').next().unwrap_or(n))
        );
    }
    println!();
    let plan0 = multigrid::Plan::new(schedule, sources[0].1.len() as u64, 1, 0, 0)
        .map_err(|e| e.to_string())?;
    let mut seen = std::collections::BTreeSet::new();
    let mut firsts = Vec::new();
    for k in 0..plan0.total_steps() {
        let st = plan0.step(k).map_err(|e| e.to_string())?;
        let shape = (st.batch_size, st.num_frames, st.crop_size);
        if seen.insert((
            std::cmp::Reverse(st.batch_size),
            st.num_frames,
            st.crop_size,
        )) {
            firsts.push((shape, k));
        }
    }
    firsts.sort_by_key(|&((b, t, s), _)| (std::cmp::Reverse(b), t, s));
    for ((b, t, s), k) in firsts {
        let mut rates = Vec::new();
        for (name, d) in &sources {
            let plan = multigrid::Plan::new(schedule, d.len() as u64, 1, 0, 0)
                .map_err(|e| e.to_string())?;
            let step = plan.step(k).map_err(|e| e.to_string())?;
            let mut spec = batch_spec(d, &plan, &step, alpha).map_err(|e| e.to_string())?;
            // The step's own clips, repeated when the batch holds fewer than asked for.
            let base = spec.indices.clone();
            spec.indices = base.iter().copied().cycle().take(clips).collect();
            let mut fast = vec![0f32; clips * spec.clip_len];
            let start = Instant::now();
            let loaded =
                load_clips(d, &plan, &spec, 0..clips, &mut fast).map_err(|e| e.to_string())?;
            let secs = start.elapsed().as_secs_f64();
            std::hint::black_box(&fast);
            if !loaded.failures.is_empty() {
                // A replaced clip would time another clip's work.
                return Err(format!("{name}: {}", loaded.failures[0]));
            }
            rates.push(clips as f64 / secs);
        }
        print!("{:>16}", format!("{b} x {t} x {s}"));
        for r in &rates {
            print!(" {r:>14.1}");
        }
        // Clips one GPU consumes per second at this shape over one core's clips per second.
        let need = f64::from(b) / gpu_step_s;
        for r in &rates {
            print!(" {:>12.1}", need / r);
        }
        println!();
    }
    Ok(())
}

/// A libtorch error as the CLI reports it: through the crate's conversion, so it reads as the
/// library's own errors do.
#[cfg(feature = "torch")]
fn torch_message(e: tch::TchError) -> String {
    multigrid::Error::from(e).to_string()
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
    let device = o
        .device
        .parse()
        .map_err(|e| format!("--device {e}"))
        .and_then(|d| multigrid::train::parse_device(d).map_err(|e| e.to_string()))?;
    let e = torch_message;
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
        let mut step = || -> Result<(), String> {
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
            opt.step(0.01).map_err(|e| e.to_string())?;
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

/// Options of `multigrid bench sgd`.
#[cfg(feature = "torch")]
pub struct SgdOptions<'a> {
    pub device: &'a str,
    /// PyTorch's fused kernel (CUDA) instead of the multi-tensor ones, for ours and the
    /// reference alike.
    pub fused: bool,
    pub steps: usize,
    pub python: &'a Path,
    pub work_dir: &'a Path,
}

/// Our SGD against torch.optim.SGD on `device` (foreach=True, or fused=True): twenty updates
/// of a tiny SlowFast's parameters from the same gradients and LRs, the largest relative
/// difference after them (PASS within 1e-6); then the seconds of one update of SlowFast R50's
/// parameters (34.6M) for both, and their ratio.
#[cfg(feature = "torch")]
pub fn sgd_bench(o: &SgdOptions) -> Result<(), String> {
    use multigrid::model::SlowFast;
    use multigrid::schedule::{ModelConfig, SolverConfig};
    use multigrid::train::optim::Sgd;
    use tch::{nn, Kind, Tensor};
    let device = o
        .device
        .parse()
        .map_err(|e| format!("--device {e}"))
        .and_then(|d| multigrid::train::parse_device(d).map_err(|e| e.to_string()))?;
    std::fs::create_dir_all(o.work_dir).map_err(|e| format!("{}: {e}", o.work_dir.display()))?;
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
    let inputs = o.work_dir.join("sgd_in.safetensors");
    let refs: Vec<(&str, &Tensor)> = saved.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&refs, &inputs).map_err(e)?;
    let config = o.work_dir.join("sgd_solver.json");
    let spec = serde_json::json!({"momentum": 0.9, "nesterov": true, "dampening": 0.0,
        "weight_decay": 1e-4, "foreach": !o.fused, "fused": o.fused, "device": device_name});
    std::fs::write(&config, spec.to_string()).map_err(|e| e.to_string())?;
    let out = o.work_dir.join("sgd_out.safetensors");
    let script = Path::new("scripts/sgd_reference.py");
    let run = Command::new(o.python)
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
    let run = Command::new(o.python)
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
