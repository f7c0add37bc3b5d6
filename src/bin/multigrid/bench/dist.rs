//! `multigrid bench dist`: what data-parallel training costs on this machine. The engines'
//! all-reduce bus bandwidth against memcpy, one SlowFast R50 gradient (DDP's buckets) against
//! an R50 training step, the tiny trainer's clips/s as 1 rank x N threads against N ranks x 1
//! thread, and how much of the gradients' all-reduce the step still waits for after backward,
//! overlapped with it and not. The ranks are this executable again under mpirun (`--worker`);
//! NCCL needs CUDA devices and is reported as such when there are none.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use multigrid::data::Task;
use multigrid::distributed::{self as dist, DistOptions};
use multigrid::model::SlowFast;
use multigrid::schedule::ModelConfig;
use multigrid::train::metrics::{read_records, Record};
use tch::{nn, Device, Kind, Tensor};

use crate::gen_data::ensure_stores;
use crate::DistArgs;

/// Message sizes of the bandwidth sweep, in bytes; the last is one R50 gradient (34.6M f32).
const SIZES: [usize; 4] = [1 << 20, 16 << 20, 64 << 20, 138_280_000];

pub fn run(a: &DistArgs) -> Result<(), String> {
    if a.worker {
        worker(&a.out)
    } else {
        ensure_stores(&a.data, 3000, Task::Simple)?;
        bench(a)
    }
}

fn run_command(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn bench(o: &DistArgs) -> Result<(), String> {
    std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "machine: {cores} cores; {} ranks on loopback; nccl: {}",
        o.ranks,
        if tch::Cuda::device_count() >= o.ranks as i64 {
            "CUDA devices present (run the same command under torchrun for it)"
        } else {
            "needs CUDA devices, none here"
        }
    );
    let report = o.out.join("collectives.json");
    run_command(
        crate::spawn::mpirun(o.ranks)
            .arg(&exe)
            .args(["bench", "dist", "--worker", "--out"])
            .arg(&o.out),
        "the MPI bandwidth ranks",
    )?;
    let text =
        std::fs::read_to_string(&report).map_err(|e| format!("{}: {e}", report.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let memcpy = super::memcpy_gbps(1.0);
    println!("\nall-reduce over {} MPI ranks (bus bandwidth = 2(n-1)/n x bytes / time), single-thread memcpy {memcpy:.2} GB/s", o.ranks);
    println!(
        "{:>12} {:>10} {:>12} {:>12}",
        "bytes", "ms", "bus GB/s", "memcpy / bus"
    );
    for row in v["allreduce"].as_array().into_iter().flatten() {
        let bus = row["bus_gbps"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:>12} {:>10.2} {:>12.2} {:>12.1}",
            row["bytes"],
            row["seconds"].as_f64().unwrap_or(f64::NAN) * 1e3,
            bus,
            memcpy / bus
        );
    }
    let comm = v["r50_gradient_seconds"].as_f64().unwrap_or(f64::NAN);
    let step = v["r50_step_seconds"].as_f64().unwrap_or(f64::NAN);
    println!(
        "\nR50 gradient ({} parameters, DDP buckets of 1 MB then 25 MB): {:.1} ms; R50 step at {} per rank: {:.2} s; communication is {:.1}% of a step",
        v["r50_parameters"],
        comm * 1e3,
        v["r50_step_shape"].as_str().unwrap_or("?"),
        step,
        100.0 * comm / step
    );

    // Training throughput: the same run as one process with every core, and as ranks with one
    // thread each (the cores split between them).
    let train = |name: &str, ranks: Option<usize>, extra: &[&str]| -> Result<f64, String> {
        let dir = o.out.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let mut cmd = Command::new(&exe);
        cmd.args(["train", "--config"])
            .arg(&o.config)
            .arg("--data")
            .arg(&o.data)
            .arg("--output-dir")
            .arg(&dir)
            // One epoch at the config's base shape: long enough for a steady rate, short
            // enough for a benchmark.
            .args([
                "--set",
                "run.precise_bn=false",
                "--set",
                "run.log_period=1",
                "--set",
                "solver.max_epoch=1",
                "--set",
                "solver.steps=[0]",
                "--set",
                "solver.lrs=[1]",
                "--set",
                "solver.warmup_epochs=0",
            ]);
        if let Some(n) = ranks {
            cmd.args(["--nproc-per-node", &n.to_string()]);
        }
        cmd.args(extra);
        run_command(&mut cmd, name)?;
        train_clips_per_s(&dir)
    };
    let one = train("one_process", None, &[])?;
    let many = train("ranks", Some(o.ranks), &[])?;
    // The same ranks with the gradients' all-reduce after the whole backward.
    let waited = train(
        "ranks_waited",
        Some(o.ranks),
        &["--set", "run.overlap_grad_reduce=false"],
    )?;
    let (exposed, exposed_waited) = (
        exposed_reduce_per_step(&o.out.join("ranks"))?,
        exposed_reduce_per_step(&o.out.join("ranks_waited"))?,
    );
    println!(
        "\ntraining ({}): 1 rank x {cores} threads {one:.1} clips/s, {} ranks x {} thread(s) {many:.1} clips/s: ratio {:.2}",
        o.config.display(),
        o.ranks,
        (cores / o.ranks).max(1),
        many / one
    );
    println!(
        "gradient all-reduce the step waits for after backward: {:.2} ms/step overlapped with \
         backward ({many:.1} clips/s), {:.2} ms/step after it ({waited:.1} clips/s)",
        exposed * 1e3,
        exposed_waited * 1e3
    );
    let summary = serde_json::json!({
        "cores": cores, "ranks": o.ranks, "memcpy_gbps": memcpy, "collectives": v,
        "train_clips_per_s_one_process": one, "train_clips_per_s_ranks": many,
        "ranks_over_one_process": many / one,
        "train_clips_per_s_ranks_reduce_after_backward": waited,
        "exposed_grad_reduce_s_per_step": exposed,
        "exposed_grad_reduce_s_per_step_after_backward": exposed_waited,
    });
    let path = o.out.join("dist.json");
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, format!("{summary:#}\n")).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
    println!("summary: {}", path.display());
    Ok(())
}

/// Seconds per step that rank 0 waited after backward for the gradients' all-reduce (the
/// timing line's `grad_reduce_s` over its steps).
fn exposed_reduce_per_step(run: &Path) -> Result<f64, String> {
    let records = read_records(&run.join("metrics.jsonl")).map_err(|e| e.to_string())?;
    records
        .iter()
        .find_map(|r| match r {
            Record::Timing(t) => {
                let steps: u64 = t.shapes.iter().map(|s| s.steps).sum();
                Some(t.grad_reduce_s / steps.max(1) as f64)
            }
            _ => None,
        })
        .ok_or_else(|| format!("{}: no timing line", run.display()))
}

/// Clips per second over the training steps of a run (logged every step): each step's clips,
/// from the run's cumulative count over all ranks, over that step's time. Evaluation and
/// checkpoints fall outside these windows. The first step pays one-time costs and is left out.
fn train_clips_per_s(run: &Path) -> Result<f64, String> {
    let records = read_records(&run.join("metrics.jsonl")).map_err(|e| e.to_string())?;
    let (mut clips, mut seconds) = (0.0, 0.0);
    let mut seen: Option<f64> = None;
    for r in records.iter().filter_map(|r| match r {
        Record::Train(t) => Some(t),
        _ => None,
    }) {
        let total = r.clips_seen as f64;
        if let Some(before) = seen.replace(total) {
            if r.clips_per_s > 0.0 {
                clips += total - before;
                seconds += (total - before) / r.clips_per_s;
            }
        }
    }
    if seconds == 0.0 {
        return Err(format!("{}: no training steps logged", run.display()));
    }
    Ok(clips / seconds)
}

/// One rank of the bandwidth measurement (under mpirun).
fn worker(out: &Path) -> Result<(), String> {
    let err = |e: multigrid::Error| e.to_string();
    let torch = |e: tch::TchError| err(e.into());
    let options = DistOptions::default();
    let launch = options.resolve().map_err(err)?;
    if let Some(n) = launch.cpu_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
    {
        tch::set_num_threads(n as i32);
    }
    let mut comm = dist::connect(&options, &launch, Device::Cpu).map_err(err)?;
    let mut rows = Vec::new();
    for bytes in SIZES {
        let t = Tensor::f_ones([(bytes / 4) as i64], (Kind::Float, Device::Cpu)).map_err(torch)?;
        comm.all_reduce_sum(&[t.shallow_clone()]).map_err(err)?;
        let reps = if bytes > 32 << 20 { 5 } else { 20 };
        comm.barrier().map_err(err)?;
        let start = Instant::now();
        for _ in 0..reps {
            comm.all_reduce_sum(&[t.shallow_clone()]).map_err(err)?;
        }
        let seconds = start.elapsed().as_secs_f64() / reps as f64;
        let n = comm.world_size() as f64;
        let bus = 2.0 * (n - 1.0) / n * bytes as f64 / seconds / 1e9;
        rows.push(serde_json::json!({"bytes": bytes, "seconds": seconds, "bus_gbps": bus}));
    }
    // One R50 gradient, bucketed as the trainer does it.
    let vs = nn::VarStore::new(Device::Cpu);
    let model = SlowFast::new(&vs.root(), &ModelConfig::default()).map_err(|e| e.to_string())?;
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let grads: Vec<Tensor> = named
        .iter()
        .map(|(_, t)| t.f_zeros_like())
        .collect::<Result<_, _>>()
        .map_err(torch)?;
    let params: i64 = grads.iter().map(|g| g.numel() as i64).sum();
    // The trainer's buckets; the first call warms the engine up.
    let reduce = |comm: &mut dyn dist::Collective| {
        dist::all_reduce_mean_bucketed(comm, &grads, dist::FIRST_BUCKET_BYTES, dist::BUCKET_BYTES)
            .map_err(err)
    };
    reduce(comm.as_mut())?;
    comm.barrier().map_err(err)?;
    let start = Instant::now();
    for _ in 0..3 {
        reduce(comm.as_mut())?;
    }
    let r50_gradient_seconds = start.elapsed().as_secs_f64() / 3.0;
    // An R50 training step (forward and backward) at a shape a 2-core machine can afford.
    let (n, t, s) = (2i64, 8i64, 112i64);
    let slow = Tensor::f_randn([n, 3, t / 4, s, s], (Kind::Float, Device::Cpu)).map_err(torch)?;
    let fast = Tensor::f_randn([n, 3, t, s, s], (Kind::Float, Device::Cpu)).map_err(torch)?;
    let labels = Tensor::f_zeros([n], (Kind::Int64, Device::Cpu)).map_err(torch)?;
    let step = || -> Result<(), String> {
        let logits = model.forward(&slow, &fast, 1, true).map_err(err)?;
        logits
            .f_cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Mean, -100, 0.0)
            .and_then(|loss| loss.f_backward())
            .map_err(torch)
    };
    step()?;
    let start = Instant::now();
    step()?;
    let r50_step_seconds = start.elapsed().as_secs_f64();
    comm.barrier().map_err(err)?;
    if comm.rank() == 0 {
        let v = serde_json::json!({
            "backend": comm.backend(), "ranks": comm.world_size(), "allreduce": rows,
            "r50_parameters": params, "r50_gradient_seconds": r50_gradient_seconds,
            "r50_step_seconds": r50_step_seconds,
            "r50_step_shape": format!("{n} clips x {t} frames x {s}^2"),
        });
        let path: PathBuf = out.join("collectives.json");
        std::fs::write(&path, format!("{v:#}\n")).map_err(|e| e.to_string())?;
    }
    Ok(())
}
