//! `multigrid bench scale`: scaling on paper. Step time and whole-run time at several GPU
//! counts, projected from step times measured on one GPU, the model's gradient in the
//! trainer's DDP buckets, and link bandwidths; nothing here runs a collective.
//!
//! Weak scaling, as the recipe is run on more GPUs: every rank keeps the per-rank shapes of
//! the config's own GPU count and the global batch grows with N, so a rank's compute per step
//! is the measured one and the steps fall with N. A step at N GPUs costs compute plus the
//! part of the gradient all-reduce that backward does not hide.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use multigrid::distributed::{BUCKET_BYTES, FIRST_BUCKET_BYTES};
use multigrid::model::Network;
use multigrid::{Config, Plan, Schedule};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::{nn, Device};

/// Latencies, seconds: NCCL's own cost model for a ring all-reduce of large messages (the
/// Simple protocol, src/graph/tuning.cc: a base per call and a cost per ring step over NVLink or
/// the network); Ethernet is our guess for NCCL over kernel TCP sockets. They matter only for
/// small buckets and many hops.
const BASE_S: f64 = 8.4e-6;
const NVLINK_HOP_S: f64 = 3.4e-6;
const IB_HOP_S: f64 = 14e-6;
const ETH_HOP_S: f64 = 30e-6;

const K400: &str = "configs/kinetics_slowfast_8x8_r50_multigrid.json";

/// `multigrid bench scale`'s arguments.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = K400)]
    config: PathBuf,
    /// Seconds per step by per-rank shape: a JSON with "series" of {batch, frames, crop,
    /// seconds} (benches/h200_step_times.json), or a run's metrics.jsonl (its timing line).
    #[arg(long, default_value = "benches/h200_step_times.json")]
    step_times: PathBuf,
    /// Series of the step-times JSON (default: its first).
    #[arg(long)]
    series: Option<String>,
    /// Training clips (the spec's K400 example).
    #[arg(long, default_value_t = 240_000)]
    dataset_size: u64,
    /// GPUs the config's train.batch_size is written for; its per-rank shapes are kept.
    #[arg(long, default_value_t = 8)]
    config_gpus: u32,
    #[arg(long, value_delimiter = ',', default_value = "8,32,128")]
    gpus: Vec<u32>,
    #[arg(long, default_value_t = 8)]
    gpus_per_node: u32,
    /// Network links per node, each at --ib-gbps or --eth-gbps (8 on DGX-class nodes).
    #[arg(long, default_value_t = 1)]
    nics_per_node: u32,
    /// NVLink GB/s per GPU per direction (H200: 450).
    #[arg(long, default_value_t = 450.0)]
    nvlink_gbs: f64,
    #[arg(long, default_value_t = 400.0)]
    ib_gbps: f64,
    #[arg(long, default_value_t = 25.0)]
    eth_gbps: f64,
    /// Share of a step spent in backward, which all-reduce can overlap.
    #[arg(long, default_value_t = 2.0 / 3.0)]
    backward_fraction: f64,
    #[arg(long)]
    json: bool,
}

#[derive(Deserialize)]
struct Point {
    batch: u32,
    frames: u32,
    crop: u32,
    seconds: f64,
}

#[derive(Deserialize)]
struct Series {
    name: String,
    #[serde(default)]
    what: String,
    steps: Vec<Point>,
}

#[derive(Deserialize)]
struct StepFile {
    #[serde(default)]
    provenance: String,
    series: Vec<Series>,
}

type Shape = (u32, u32, u32);
/// Seconds per step of each measured (batch, frames, crop).
type Measured = Vec<(Shape, f64)>;

/// Per-shape seconds from FILE: our JSON (`series`, see benches/h200_step_times.json) or a run's
/// metrics.jsonl, whose `timing` line holds steps and seconds per shape.
fn read_step_times(path: &Path, series: Option<&str>) -> Result<(String, Measured), String> {
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("--step-times {name}: {e}"))?;
    let whole = serde_json::from_str::<Value>(&text).ok();
    let (about, points): (String, Measured) = if let Some(v) =
        whole.filter(|v| v.get("series").is_some())
    {
        let file: StepFile = serde_json::from_value(v).map_err(|e| format!("{name}: {e}"))?;
        let s = match series {
            Some(want) => file.series.into_iter().find(|s| s.name == want),
            None => file.series.into_iter().next(),
        };
        let s = s.ok_or_else(|| format!("{name}: no series {:?}", series.unwrap_or("")))?;
        let about = format!(
            "{name}, series {} ({}); {}",
            s.name, s.what, file.provenance
        );
        let steps = s
            .steps
            .into_iter()
            .map(|p| ((p.batch, p.frames, p.crop), p.seconds));
        (about, steps.collect())
    } else {
        let timing = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .rfind(|v| v["type"] == "timing")
            .ok_or_else(|| {
                format!(
                    "{name}: neither a JSON with \"series\" nor a metrics.jsonl with a timing line"
                )
            })?;
        let mut sums: BTreeMap<Shape, (f64, f64)> = BTreeMap::new();
        for s in timing["shapes"].as_array().into_iter().flatten() {
            let u = |k: &str| s[k].as_u64().and_then(|v| u32::try_from(v).ok());
            let key = (u("batch"), u("frames"), u("crop"));
            if let ((Some(b), Some(t), Some(c)), Some(n), Some(sec)) =
                (key, u("steps"), s["seconds"].as_f64())
            {
                let e = sums.entry((b, t, c)).or_default();
                *e = (e.0 + f64::from(n), e.1 + sec);
            }
        }
        let steps = sums.into_iter().filter(|(_, (n, _))| *n > 0.0);
        let steps = steps.map(|(shape, (n, s))| (shape, s / n));
        let about = format!("{name}, timing line (mean over each shape's steps, warm-up included)");
        (about, steps.collect())
    };
    if points.is_empty() {
        return Err(format!("{name}: no per-shape step times"));
    }
    if let Some(((b, t, c), s)) = points.iter().find(|p| !(p.1 > 0.0 && p.1.is_finite())) {
        return Err(format!("{name}: {b}x{t}x{c} has seconds {s}, not > 0"));
    }
    Ok((about, points))
}

/// A shape's step seconds and where they come from. Unmeasured shapes take seconds per
/// multiply-add interpolated linearly in log per-clip MACs between the measured shapes either
/// side (the nearest one beyond them): per-step MACs alone would miss that small clips in
/// large batches use the GPU differently.
fn step_seconds(
    shape: Shape,
    measured: &Measured,
    macs: &dyn Fn(u32, u32) -> f64,
) -> (f64, String) {
    let (b, t, c) = shape;
    if let Some(&(_, s)) = measured.iter().find(|p| p.0 == shape) {
        return (s, "measured".into());
    }
    let mut pts: Vec<(f64, f64, String)> = measured
        .iter()
        .map(|&((pb, pt, pc), s)| {
            let clip = macs(pt, pc);
            (
                clip.ln(),
                s / (f64::from(pb) * clip),
                format!("{pb}x{pt}x{pc}"),
            )
        })
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let x = macs(t, c).ln();
    let hi = pts.partition_point(|p| p.0 < x);
    let (rate, from) = if hi == 0 || hi == pts.len() {
        let p = &pts[hi.min(pts.len() - 1)];
        (p.1, format!("scaled by MACs from {}", p.2))
    } else {
        let (l, h) = (&pts[hi - 1], &pts[hi]);
        // Two measured shapes with the same clip cost: their mean.
        let w = if h.0 > l.0 {
            (x - l.0) / (h.0 - l.0)
        } else {
            0.5
        };
        let from = format!("interpolated by MACs from {} and {}", l.2, h.2);
        (l.1 + w * (h.1 - l.1), from)
    };
    (rate * f64::from(b) * macs(t, c), from)
}

#[derive(Clone, Serialize)]
struct Link {
    name: String,
    bytes_per_s: f64,
    hop_s: f64,
}

/// Bandwidth-optimal ring all-reduce of `bytes` over `k` members.
fn ring_s(k: u32, bytes: f64, link: &Link) -> f64 {
    let k = f64::from(k);
    if k <= 1.0 {
        return 0.0;
    }
    2.0 * (k - 1.0) / k * bytes / link.bytes_per_s + 2.0 * (k - 1.0) * link.hop_s
}

/// All-reduce of one bucket at `n` GPUs, `g` to a node, as NCCL does it across nodes:
/// reduce-scatter and all-gather over NVLink inside a node, and across nodes each GPU's 1/g
/// shard, all g of them sharing the node's NICs, so the node's links carry a whole ring's share.
fn all_reduce_s(bytes: f64, n: u32, g: u32, nvlink: &Link, net: &Link) -> f64 {
    match n {
        0 | 1 => 0.0,
        n if n <= g => BASE_S + ring_s(n, bytes, nvlink),
        n => BASE_S + ring_s(g, bytes, nvlink) + ring_s(n / g, bytes, net),
    }
}

/// Communication seconds left after backward ends. With overlap, a bucket's all-reduce starts
/// once backward has produced its gradients (at a uniform rate over the gradient's bytes) and
/// the previous bucket's is done; the last bucket is ready only when backward ends.
fn exposed_s(buckets: &[(f64, f64)], backward_s: f64, overlap: bool) -> f64 {
    let total: f64 = buckets.iter().map(|b| b.1).sum();
    if !overlap {
        return total;
    }
    let all: f64 = buckets.iter().map(|b| b.0).sum();
    let (mut done, mut end) = (0.0, 0.0f64);
    for &(bytes, secs) in buckets {
        done += bytes;
        end = end.max(backward_s * done / all) + secs;
    }
    (end - backward_s).max(0.0)
}

/// Steps per per-rank shape over the whole plan at `world` GPUs, with the per-rank shapes of
/// the config's own GPU count.
fn shape_steps(s: &Schedule, o: &Args, world: u32) -> Result<BTreeMap<Shape, u64>, String> {
    let mut config = s.config().clone();
    let per_rank = config.train.batch_size / o.config_gpus;
    config.train.batch_size = per_rank
        .checked_mul(world)
        .ok_or_else(|| format!("{world} GPUs x {per_rank} clips overflow train.batch_size"))?;
    let s = Schedule::new(config).map_err(|e| format!("{world} GPUs: {e}"))?;
    let plan =
        Plan::new(&s, o.dataset_size, world, 0, 0).map_err(|e| format!("{world} GPUs: {e}"))?;
    let mut out = BTreeMap::new();
    for e in 0..s.max_epoch() {
        let (n, first) = (
            plan.steps_in_epoch(e).unwrap_or(0),
            plan.epoch_first_step(e).unwrap_or(0),
        );
        // Iteration i of an epoch is in short-cycle phase i % phases.
        let phases = s.short_cycle_batch_factors(s.stage_index_at(e)).len() as u64;
        for p in 0..phases.min(n) {
            let st = plan.step(first + p).map_err(|e| e.to_string())?;
            let count = n / phases + u64::from(p < n % phases);
            *out.entry((st.batch_size, st.num_frames, st.crop_size))
                .or_insert(0) += count;
        }
    }
    Ok(out)
}

#[derive(Serialize)]
struct ShapeTime {
    batch: u32,
    frames: u32,
    crop: u32,
    gmacs_per_clip: f64,
    seconds: f64,
    source: String,
}

#[derive(Serialize)]
struct Gradient {
    grads: &'static str,
    bytes: f64,
    buckets: Vec<f64>,
}

#[derive(Serialize)]
struct Row {
    gpus: u32,
    link: String,
    grads: &'static str,
    overlap: bool,
    /// One step's all-reduce, and the part of it backward does not hide, at the baseline shape.
    comm_s: f64,
    exposed_s: f64,
    efficiency_baseline: f64,
    efficiency_multigrid: f64,
    hours_baseline: f64,
    hours_multigrid: f64,
    ratio: f64,
}

#[derive(Serialize)]
struct Report {
    config: String,
    dataset_size: u64,
    step_times: String,
    shapes: Vec<ShapeTime>,
    parameters: usize,
    gradients: Vec<Gradient>,
    links: Vec<Link>,
    base_s: f64,
    /// Baseline, multigrid on one GPU: steps and hours of compute.
    one_gpu_steps: [u64; 2],
    one_gpu_hours: [f64; 2],
    assumptions: Vec<String>,
    rows: Vec<Row>,
}

fn check(o: &Args) -> Result<Config, String> {
    let rates = [
        ("--nvlink-gbs", o.nvlink_gbs),
        ("--ib-gbps", o.ib_gbps),
        ("--eth-gbps", o.eth_gbps),
    ];
    if let Some((what, v)) = rates.iter().find(|(_, v)| !(*v > 0.0 && v.is_finite())) {
        return Err(format!("{what} must be a positive bandwidth, got {v}"));
    }
    let (bf, g, cg) = (o.backward_fraction, o.gpus_per_node, o.config_gpus);
    if !(0.0..=1.0).contains(&bf) {
        return Err(format!("--backward-fraction must be within 0-1, got {bf}"));
    }
    if g == 0 || o.nics_per_node == 0 || cg == 0 {
        return Err("--gpus-per-node, --nics-per-node and --config-gpus must be > 0".into());
    }
    if let Some(n) = o.gpus.iter().find(|&&n| n == 0 || (n > g && n % g != 0)) {
        return Err(format!(
            "--gpus {n}: not whole nodes of --gpus-per-node {g}"
        ));
    }
    let config =
        Config::from_file(&o.config).map_err(|e| format!("{}: {e}", o.config.display()))?;
    let b0 = config.train.batch_size;
    if b0 % cg != 0 {
        return Err(format!(
            "train.batch_size {b0} does not divide by --config-gpus {cg}"
        ));
    }
    Ok(config)
}

pub fn run(o: &Args) -> Result<(), String> {
    let config = check(o)?;
    let multigrid = Schedule::new(config.clone()).map_err(|e| e.to_string())?;
    let baseline = multigrid.baseline().map_err(|e| e.to_string())?;
    let (step_times, measured) = read_step_times(&o.step_times, o.series.as_deref())?;

    let vs = nn::VarStore::new(Device::Cpu);
    let model = Network::new(&vs.root(), &config.model).map_err(|e| e.to_string())?;
    let macs = |t: u32, c: u32| model.macs(i64::from(t), i64::from(c));
    // Backward produces the classifier's gradient first and the stems' last; parameters are
    // named head.*, s1.* .. s5.*, so reversed names with the head first follow backward.
    let mut params: Vec<(bool, String, usize)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(n, t)| (!n.starts_with("head."), n, t.numel()))
        .collect();
    params.sort_by(|a, b| (a.0, &b.1).cmp(&(b.0, &a.1)));
    let sizes: Vec<usize> = params.iter().map(|p| p.2).collect();
    let gradients: Vec<Gradient> = [("fp32", 4usize), ("bf16", 2)]
        .into_iter()
        .map(|(grads, elem)| {
            let ranges =
                multigrid::distributed::buckets(&sizes, elem, FIRST_BUCKET_BYTES, BUCKET_BYTES);
            let buckets: Vec<f64> = ranges
                .into_iter()
                .map(|r| (sizes[r].iter().sum::<usize>() * elem) as f64)
                .collect();
            Gradient {
                grads,
                bytes: buckets.iter().sum(),
                buckets,
            }
        })
        .collect();

    // counts[i] for o.gpus[i]; one GPU last, for the reference hours.
    let worlds: Vec<u32> = o.gpus.iter().copied().chain([1]).collect();
    let counts = |s| {
        worlds
            .iter()
            .map(|&n| shape_steps(s, o, n))
            .collect::<Result<Vec<_>, _>>()
    };
    let (base_counts, mg_counts) = (counts(&baseline)?, counts(&multigrid)?);
    let mut seconds: BTreeMap<Shape, (f64, String)> = BTreeMap::new();
    for &k in base_counts.iter().chain(&mg_counts).flat_map(|m| m.keys()) {
        seconds
            .entry(k)
            .or_insert_with(|| step_seconds(k, &measured, &macs));
    }
    let hours = |m: &BTreeMap<Shape, u64>, step: &dyn Fn(f64) -> f64| {
        m.iter()
            .map(|(k, &n)| n as f64 * step(seconds[k].0))
            .sum::<f64>()
            / 3600.0
    };
    let b0 = config.train.batch_size;
    let d = &config.data;
    let base_s = seconds[&(b0 / o.config_gpus, d.num_frames, d.train_crop_size)].0;

    let link = |name: String, bytes_per_s: f64, hop_s| Link {
        name,
        bytes_per_s,
        hop_s,
    };
    // Network rates are bits per second per NIC; the node's NICs share its traffic.
    let (ib, eth) = (o.ib_gbps, o.eth_gbps);
    let net = |gbps: f64| gbps * f64::from(o.nics_per_node) / 8.0 * 1e9;
    let links = vec![
        link("NVLink".into(), o.nvlink_gbs * 1e9, NVLINK_HOP_S),
        link(format!("IB {ib} Gb/s"), net(ib), IB_HOP_S),
        link(format!("Ethernet {eth} Gb/s"), net(eth), ETH_HOP_S),
    ];
    let mut rows = Vec::new();
    for (i, &n) in o.gpus.iter().enumerate() {
        // One node has no network: its row is NVLink's.
        let nets = if n <= o.gpus_per_node { 0..1 } else { 1..3 };
        for net in &links[nets] {
            for g in &gradients {
                let buckets: Vec<(f64, f64)> = g
                    .buckets
                    .iter()
                    .map(|&b| (b, all_reduce_s(b, n, o.gpus_per_node, &links[0], net)))
                    .collect();
                for overlap in [false, true] {
                    let step = |s: f64| s + exposed_s(&buckets, o.backward_fraction * s, overlap);
                    let (bh, mh) = (hours(&base_counts[i], &step), hours(&mg_counts[i], &step));
                    let compute = |m| hours(m, &|s| s);
                    rows.push(Row {
                        gpus: n,
                        link: net.name.clone(),
                        grads: g.grads,
                        overlap,
                        comm_s: buckets.iter().map(|b| b.1).sum(),
                        exposed_s: step(base_s) - base_s,
                        efficiency_baseline: compute(&base_counts[i]) / bh,
                        efficiency_multigrid: compute(&mg_counts[i]) / mh,
                        hours_baseline: bh,
                        hours_multigrid: mh,
                        ratio: mh / bh,
                    });
                }
            }
        }
    }
    let (one_b, one_m) = (&base_counts[o.gpus.len()], &mg_counts[o.gpus.len()]);
    let one_gpu_hours = [hours(one_b, &|s| s), hours(one_m, &|s| s)];
    let report = Report {
        config: o.config.display().to_string(),
        dataset_size: o.dataset_size,
        step_times,
        shapes: seconds
            .into_iter()
            .map(|((batch, frames, crop), (seconds, source))| {
                let gmacs_per_clip = macs(frames, crop) / 1e9;
                ShapeTime {
                    batch,
                    frames,
                    crop,
                    gmacs_per_clip,
                    seconds,
                    source,
                }
            })
            .collect(),
        parameters: sizes.iter().sum(),
        gradients,
        links,
        base_s: BASE_S,
        one_gpu_steps: [one_b.values().sum(), one_m.values().sum()],
        one_gpu_hours,
        assumptions: assumptions(o, b0),
        rows,
    };
    if o.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print(&report);
    }
    Ok(())
}

fn assumptions(o: &Args, b0: u32) -> Vec<String> {
    let us = |s: f64| format!("{:.1}", s * 1e6);
    vec![
        format!("every GPU count keeps the per-rank shapes of the config's {} GPUs (train.batch_size {b0} x N / {}): the global batch grows with N and the steps fall; accuracy at that batch is not modelled", o.config_gpus, o.config_gpus),
        "compute per step = the one-GPU step time of the rank's shape (measured, or interpolated as listed); data loading, evaluation, checkpoints and warm-up are left out".into(),
        format!("{} GPUs per node on NVLink at {} GB/s per GPU per direction; {} NIC(s) per node between nodes; nominal link rates, no protocol overhead, no contention from other jobs", o.gpus_per_node, o.nvlink_gbs, o.nics_per_node),
        format!("one bucket's all-reduce: ring, 2(k-1)/k x bytes / bandwidth + 2(k-1) hops x latency (NVLink {}, IB {}, Ethernet {} us) + {} us per call; across nodes hierarchical, a ring inside each node then a ring over the nodes on the node's NICs", us(NVLINK_HOP_S), us(IB_HOP_S), us(ETH_HOP_S), us(BASE_S)),
        "gradients in the trainer's DDP buckets (first 1 MiB, then 25 MiB) in backward order; bf16 gradients are compressed before the all-reduce, halving its bytes".into(),
        format!("overlap off: every bucket after backward (the trainer today); on: one bucket at a time as backward, {:.0}% of the step, produces the gradient at a uniform rate", 100.0 * o.backward_fraction),
        "efficiency = compute time / projected time over the whole run, 1.0 on one GPU".into(),
    ]
}

fn print(r: &Report) {
    println!(
        "Scale on paper: {}, {} training clips",
        r.config, r.dataset_size
    );
    println!("step times: {}", r.step_times);
    println!(
        "{:>12} {:>11} {:>8}  source",
        "B x T x S", "GMACs/clip", "s/step"
    );
    for s in &r.shapes {
        let shape = format!("{}x{}x{}", s.batch, s.frames, s.crop);
        println!(
            "{shape:>12} {:>11.2} {:>8.4}  {}",
            s.gmacs_per_clip, s.seconds, s.source
        );
    }
    let g = |i: usize| (r.gradients[i].bytes / 1e6, r.gradients[i].buckets.len());
    let ((f, fb), (h, hb)) = (g(0), g(1));
    println!(
        "gradient: {} parameters; fp32 {f:.1} MB in {fb} buckets, bf16 {h:.1} MB in {hb} buckets",
        r.parameters
    );
    let ([sb, sm], [hb, hm]) = (r.one_gpu_steps, r.one_gpu_hours);
    println!("1 GPU: baseline {hb:.1} h ({sb} steps), multigrid {hm:.1} h ({sm} steps), multigrid/baseline {:.3}", hm / hb);
    println!("assumptions:");
    for a in &r.assumptions {
        println!("  - {a}");
    }
    println!(" GPUs               link grads overlap  comm ms  exp. ms  eff base  eff mg   base h    mg h  mg/base");
    for x in &r.rows {
        println!(
            "{:>5} {:>18} {:>5} {:>7} {:>8.2} {:>8.2} {:>9.3} {:>7.3} {:>8.2} {:>7.2} {:>8.3}",
            x.gpus,
            x.link,
            x.grads,
            if x.overlap { "on" } else { "off" },
            x.comm_s * 1e3,
            x.exposed_s * 1e3,
            x.efficiency_baseline,
            x.efficiency_multigrid,
            x.hours_baseline,
            x.hours_multigrid,
            x.ratio
        );
    }
    println!("comm ms: one step's all-reduce at the baseline shape; exp. ms: the part backward does not hide");
}
