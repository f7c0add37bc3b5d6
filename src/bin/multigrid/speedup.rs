//! `multigrid bench speedup`: the paper's comparison on synthetic video. The baseline and the
//! multigrid schedule each run their full schedule for several seeds; the report gives final
//! val and test top-1, the whole-run wall-clock ratio, the time each run first reaches a list
//! of accuracy levels, where the wall-clock time went (training steps per shape, data wait,
//! evaluation, precise BN, checkpoints) against the plan's work, and whether the task behaved
//! as the benchmark needs (still improving late, not saturated, far above chance).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::data::Task;
use super::train::{ensure_data, train, Overrides};

/// What `bench speedup` runs.
pub struct Options {
    pub data: PathBuf,
    pub clips: u32,
    pub out: PathBuf,
    pub task: Task,
    pub seeds: u32,
    pub quick: bool,
    pub report_only: bool,
    pub overrides: Overrides,
}

/// The (baseline, multigrid) configs of a task; `quick` takes the tiny model's short schedule.
fn configs(task: Task, quick: bool) -> [&'static str; 2] {
    match (task, quick) {
        (Task::Simple, false) => [
            "configs/synthetic_slowfast_small.json",
            "configs/synthetic_slowfast_small_multigrid.json",
        ],
        (Task::Hard, false) => [
            "configs/synthetic_hard_slowfast_small.json",
            "configs/synthetic_hard_slowfast_small_multigrid.json",
        ],
        (_, true) => [
            "configs/synthetic_slowfast_tiny.json",
            "configs/synthetic_slowfast_tiny_multigrid.json",
        ],
    }
}

const KINDS: [&str; 2] = ["baseline", "multigrid"];

/// Accuracy levels, as fractions of the baseline's mean final val top-1, whose first arrival
/// each run is timed at.
const LEVELS: [f64; 3] = [0.5, 0.7, 0.9];

pub fn run(o: &Options) -> Result<(), String> {
    if o.seeds == 0 {
        return Err("--seeds must be at least 1".into());
    }
    if !o.report_only {
        // Before the data, which takes minutes: a wrong --out fails at once.
        super::train::clear_own_output(&o.out, |name| {
            KINDS.iter().any(|k| name.starts_with(&format!("{k}-s")))
                || name == "speedup.json"
                || name.starts_with("accuracy_vs_time.")
        })?;
        ensure_data(&o.data, o.clips, o.task)?;
        for seed in 0..o.seeds {
            for (kind, config) in KINDS.iter().zip(configs(o.task, o.quick)) {
                eprintln!("== {kind}, seed {seed}: {config}");
                let mut set = o.overrides.set.clone();
                set.push(format!("run.seed={seed}"));
                let ov = Overrides {
                    data: Some(o.data.clone()),
                    set,
                    ..o.overrides.clone()
                };
                train(
                    Path::new(config),
                    &o.out.join(format!("{kind}-s{seed}")),
                    false,
                    None,
                    &ov,
                )?;
            }
        }
    }
    let classes = std::fs::read_to_string(o.data.join("classes.txt"))
        .map(|t| t.lines().count())
        .unwrap_or_else(|_| o.task.class_names().len());
    let report = report(&o.out, classes)?;
    let path = o.out.join("speedup.json");
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, format!("{report:#}\n")).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("summary: {}", path.display());
    Ok(())
}

/// One finished run's figures, from its metrics.jsonl.
struct Run {
    name: String,
    kind: usize,
    evals: Vec<(f64, f64)>,
    wall: f64,
    val: Option<f64>,
    test: Option<f64>,
    timing: Value,
}

fn read_run(dir: &Path, name: &str, kind: usize) -> Result<Run, String> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let summary = lines
        .iter()
        .find(|v| v["type"] == "summary")
        .ok_or_else(|| format!("{} has no summary line: did it finish?", dir.display()))?;
    Ok(Run {
        name: name.to_string(),
        kind,
        evals: lines
            .iter()
            .filter(|v| v["type"] == "eval")
            .filter_map(|v| Some((v["wall_s"].as_f64()?, v["top1"].as_f64()?)))
            .collect(),
        wall: summary["wall_s"].as_f64().unwrap_or(f64::NAN),
        val: summary["top1"].as_f64(),
        test: summary["test_top1"].as_f64(),
        timing: with_macs(
            dir,
            lines
                .iter()
                .find(|v| v["type"] == "timing")
                .cloned()
                .unwrap_or(Value::Null),
        ),
    })
}

/// Runs from before the timing line carried multiply-adds get them from the model of the
/// config their checkpoints hold; without a checkpoint they stay absent.
fn with_macs(dir: &Path, mut timing: Value) -> Value {
    let Some(shapes) = timing["shapes"].as_array_mut() else {
        return timing;
    };
    if shapes.iter().all(|s| s.get("macs").is_some()) {
        return timing;
    }
    let model = multigrid::train::checkpoint::list(&dir.join("checkpoints"))
        .ok()
        .and_then(|l| l.last().cloned())
        .and_then(|(_, ckpt)| multigrid::train::checkpoint::read_manifest(&ckpt).ok())
        .and_then(|m| {
            let vs = tch::nn::VarStore::new(tch::Device::Cpu);
            multigrid::model::SlowFast::new(&vs.root(), &m.config.model).ok()
        });
    if let Some(model) = model {
        for s in shapes.iter_mut() {
            let (t, crop, clips) = (
                s["frames"].as_i64(),
                s["crop"].as_i64(),
                s["clips"].as_f64(),
            );
            if let (Some(t), Some(crop), Some(clips)) = (t, crop, clips) {
                s["macs"] = json!(clips * model.macs(t, crop));
            }
        }
    }
    timing
}

/// Runs under `out`: `baseline-sN` and `multigrid-sN`, or a single `baseline` and `multigrid`
/// (what `make demo` writes).
fn find_runs(out: &Path) -> Result<Vec<Run>, String> {
    let mut runs = Vec::new();
    let entries = std::fs::read_dir(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("metrics.jsonl").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let kind = KINDS
            .iter()
            .position(|k| name == *k || name.strip_prefix(k).is_some_and(|r| r.starts_with("-s")));
        if let Some(kind) = kind {
            runs.push(read_run(&out.join(&name), &name, kind)?);
        }
    }
    for (k, kind) in KINDS.iter().enumerate() {
        if !runs.iter().any(|r| r.kind == k) {
            return Err(format!("no finished {kind} run under {}", out.display()));
        }
    }
    Ok(runs)
}

/// Mean and sample standard deviation (0 for one value); None for no values.
fn stats(xs: &[f64]) -> Option<(f64, f64)> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Some((mean, var.sqrt()))
}

fn ms(s: Option<(f64, f64)>) -> Value {
    s.map_or(Value::Null, |(m, d)| json!({"mean": m, "std": d}))
}

fn fmt(s: Option<(f64, f64)>, digits: usize) -> String {
    s.map_or("-".into(), |(m, d)| format!("{m:.digits$} ± {d:.digits$}"))
}

/// The first wall-clock time at which a run's val top-1 reached `level`.
fn first_reaching(run: &Run, level: f64) -> Option<f64> {
    run.evals.iter().find(|e| e.1 >= level).map(|e| e.0)
}

fn timing_f(run: &Run, key: &str) -> f64 {
    run.timing[key].as_f64().unwrap_or(0.0)
}

/// Seconds, work and multiply-adds per training shape, pooled over runs: (stage, frames, crop,
/// batch) -> (steps, seconds, work, macs). Runs from before `macs` was logged have 0 there.
type ShapeTable = std::collections::BTreeMap<(u64, u64, u64, u64), (u64, f64, f64, f64)>;

fn shapes(runs: &[&Run]) -> ShapeTable {
    let mut t = ShapeTable::new();
    for r in runs {
        for s in r.timing["shapes"].as_array().into_iter().flatten() {
            let key = ["stage", "frames", "crop", "batch"].map(|k| s[k].as_u64().unwrap_or(0));
            let e = t
                .entry((key[0], key[1], key[2], key[3]))
                .or_insert((0, 0.0, 0.0, 0.0));
            e.0 += s["steps"].as_u64().unwrap_or(0);
            e.1 += s["seconds"].as_f64().unwrap_or(0.0);
            e.2 += s["work"].as_f64().unwrap_or(0.0);
            e.3 += s["macs"].as_f64().unwrap_or(0.0);
        }
    }
    t
}

fn report(out: &Path, classes: usize) -> Result<Value, String> {
    let runs = find_runs(out)?;
    let of = |k: usize| runs.iter().filter(|r| r.kind == k).collect::<Vec<_>>();
    let (base, mg) = (of(0), of(1));
    let figure = |rs: &[&Run], f: &dyn Fn(&Run) -> Option<f64>| {
        stats(&rs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
    };
    let chance = 100.0 / classes.max(1) as f64;

    println!(
        "{:<11} {:>5} {:>16} {:>14} {:>14} {:>10} {:>10} {:>10}",
        "run", "seeds", "wall s", "val top-1", "test top-1", "eval s", "precise s", "data s"
    );
    let mut per_kind = Vec::new();
    for (k, rs) in [&base, &mg].iter().enumerate() {
        let wall = figure(rs, &|r| Some(r.wall));
        let val = figure(rs, &|r| r.val);
        let test = figure(rs, &|r| r.test);
        let eval = figure(rs, &|r| Some(timing_f(r, "eval_s")));
        let precise = figure(rs, &|r| Some(timing_f(r, "precise_bn_s")));
        let data = figure(rs, &|r| Some(timing_f(r, "data_wait_s")));
        println!(
            "{:<11} {:>5} {:>16} {:>14} {:>14} {:>10} {:>10} {:>10}",
            KINDS[k],
            rs.len(),
            fmt(wall, 1),
            fmt(val, 1),
            fmt(test, 1),
            fmt(eval, 0),
            fmt(precise, 0),
            fmt(data, 0)
        );
        per_kind.push(json!({
            "runs": rs.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
            "wall_s": ms(wall), "val_top1": ms(val), "test_top1": ms(test),
            "eval_s": ms(eval), "precise_bn_s": ms(precise), "data_wait_s": ms(data),
            "checkpoint_s": ms(figure(rs, &|r| Some(timing_f(r, "checkpoint_s")))),
            "step_s": ms(figure(rs, &|r| Some(timing_f(r, "step_s")))),
        }));
    }
    let mean = |s: Option<(f64, f64)>| s.map_or(f64::NAN, |s| s.0);
    let base_wall = mean(figure(&base, &|r| Some(r.wall)));
    let mg_wall = mean(figure(&mg, &|r| Some(r.wall)));
    let base_final = mean(figure(&base, &|r| r.val));
    let wall_ratio = base_wall / mg_wall;

    // Time to accuracy: seed k of the baseline against seed k of multigrid.
    println!("\ntime to first reach a val top-1 level (levels: fractions of the baseline's mean final {base_final:.1}%):");
    let mut levels = Vec::new();
    for frac in LEVELS {
        let level = frac * base_final;
        let times = |rs: &[&Run]| {
            rs.iter()
                .map(|r| first_reaching(r, level))
                .collect::<Vec<_>>()
        };
        let (bt, mt) = (times(&base), times(&mg));
        let ratios: Vec<f64> = bt
            .iter()
            .zip(&mt)
            .filter_map(|(b, m)| Some(b.as_ref()? / m.as_ref()?))
            .collect();
        let reached = |t: &[Option<f64>]| t.iter().flatten().copied().collect::<Vec<_>>();
        let (b, m, r) = (stats(&reached(&bt)), stats(&reached(&mt)), stats(&ratios));
        println!(
            "  {:>3.0}% ({level:.1}%): baseline {} s ({}/{} runs), multigrid {} s ({}/{}), ratio {}",
            frac * 100.0,
            fmt(b, 1),
            reached(&bt).len(),
            bt.len(),
            fmt(m, 1),
            reached(&mt).len(),
            mt.len(),
            fmt(r, 2)
        );
        levels.push(json!({"fraction": frac, "top1": level, "baseline_s": ms(b),
            "multigrid_s": ms(m), "ratio": ms(r),
            "baseline_reached": reached(&bt).len(), "multigrid_reached": reached(&mt).len()}));
    }

    // Where the time goes: each multigrid shape's seconds per unit of work against the
    // baseline's shape.
    let (bs, ms_) = (shapes(&base), shapes(&mg));
    type Column = fn(&(u64, f64, f64, f64)) -> f64;
    let total = |t: &ShapeTable, f: Column| t.values().map(f).sum::<f64>();
    let (seconds, work, macs): (Column, Column, Column) = (|v| v.1, |v| v.2, |v| v.3);
    let base_cost = total(&bs, seconds) / total(&bs, work);
    let base_mac_cost = total(&bs, seconds) / total(&bs, macs);
    let ratio =
        |f: Column| (total(&bs, f) / base.len() as f64) / (total(&ms_, f) / mg.len() as f64);
    let (work_ratio, mac_ratio) = (ratio(work), ratio(macs));
    // Without multiply-adds logged (runs from before they were), NaN rather than a ratio.
    let mac_ratio = if total(&bs, macs) > 0.0 && total(&ms_, macs) > 0.0 {
        mac_ratio
    } else {
        f64::NAN
    };
    let step_ratio = mean(figure(&base, &|r| Some(timing_f(r, "step_s"))))
        / mean(figure(&mg, &|r| Some(timing_f(r, "step_s"))));
    println!("\nmultigrid training steps by shape (relative cost: seconds per unit of work, clips x frames x crop^2, and per multiply-add, over the baseline's):");
    println!(
        "  {:>5} {:>6} {:>5} {:>5} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "stage", "frames", "crop", "batch", "steps", "s/step", "MACs/work", "cost/work", "cost/MAC"
    );
    let mut efficiency = Vec::new();
    for (&(stage, t, s, n), &(steps, secs, w, m)) in &ms_ {
        let rel = (secs / w) / base_cost;
        let rel_mac = (secs / m) / base_mac_cost;
        // Multiply-adds per unit of work against the base shape's: what rounding up the
        // strided feature maps adds at this crop.
        let mac_density = (m / w) / (total(&bs, macs) / total(&bs, work));
        println!(
            "  {stage:>5} {t:>6} {s:>5} {n:>5} {steps:>7} {:>9.3} {mac_density:>9.2} {rel:>9.2} {rel_mac:>9.2}",
            secs / steps.max(1) as f64
        );
        efficiency.push(json!({"stage": stage, "frames": t, "crop": s, "batch": n,
            "steps": steps, "seconds": secs, "work": w, "macs": m, "relative_cost": rel,
            "relative_cost_per_mac": rel_mac, "macs_per_work": mac_density}));
    }
    println!(
        "\nwhole runs: wall-clock {wall_ratio:.2}x, training steps alone {step_ratio:.2}x, work {work_ratio:.2}x, \
         multiply-adds {mac_ratio:.2}x: {:.0}% of the work saved and {:.0}% of the multiply-adds saved reach the wall clock",
        100.0 * wall_ratio / work_ratio,
        100.0 * wall_ratio / mac_ratio
    );

    // The task has to behave like Kinetics for the ratios to mean what the paper's do.
    let at_quarter: Vec<f64> = base
        .iter()
        .map(|r| {
            r.evals
                .iter()
                .take_while(|e| e.0 <= 0.25 * r.wall)
                .last()
                .map_or(chance, |e| e.1)
        })
        .collect();
    let quarter = mean(stats(&at_quarter));
    let criteria = [
        (
            "the baseline's val top-1 at 25% of its run is at least 10 points below its final",
            base_final - quarter >= 10.0,
            format!("{quarter:.1}% vs {base_final:.1}%"),
        ),
        (
            "the baseline's final val top-1 is below 95%",
            base_final < 95.0,
            format!("{base_final:.1}%"),
        ),
        (
            "chance is far below both (under half of each)",
            chance < 0.5 * quarter.min(base_final),
            format!("chance {chance:.1}%"),
        ),
    ];
    println!("\ntask criteria:");
    for (what, ok, figures) in &criteria {
        println!(
            "  [{}] {what} ({figures})",
            if *ok { "pass" } else { "FAIL" }
        );
    }

    let curves = runs
        .iter()
        .map(|r| {
            let shade = runs[..]
                .iter()
                .filter(|o| o.kind == r.kind)
                .position(|o| o.name == r.name)
                .unwrap_or(0);
            super::chart::read(&out.join(&r.name), &r.name, r.kind, shade)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let svg = out.join("accuracy_vs_time.svg");
    let png = super::chart::draw(&curves, &svg)?;
    println!("\nplot: {} and {}", svg.display(), png.display());

    Ok(json!({
        "classes": classes, "chance_top1": chance,
        "baseline": per_kind[0], "multigrid": per_kind[1],
        "wall_ratio": wall_ratio, "step_ratio": step_ratio, "work_ratio": work_ratio,
        "wall_over_work": wall_ratio / work_ratio, "mac_ratio": mac_ratio,
        "wall_over_macs": wall_ratio / mac_ratio,
        "time_to_accuracy": levels, "multigrid_shapes": efficiency,
        "baseline_cost_s_per_work": base_cost,
        "criteria": criteria.iter().map(|(w, ok, f)| json!({"criterion": w, "pass": ok, "figures": f})).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_run(dir: &Path, evals: &[(f64, f64)], wall: f64, shapes: Value, step_s: f64) {
        std::fs::create_dir_all(dir).unwrap();
        let mut text = String::new();
        for (i, (w, a)) in evals.iter().enumerate() {
            text += &format!(
                "{}\n",
                json!({"type": "train", "wall_s": w, "loss": 2.0 - i as f64 * 0.1})
            );
            text += &format!("{}\n", json!({"type": "eval", "wall_s": w, "top1": a}));
        }
        text += &format!(
            "{}\n",
            json!({"type": "timing", "shapes": shapes, "step_s": step_s, "eval_s": 5.0,
                   "precise_bn_s": 1.0, "checkpoint_s": 0.5, "data_wait_s": 0.2})
        );
        text += &format!(
            "{}\n",
            json!({"type": "summary", "wall_s": wall, "top1": evals.last().unwrap().1, "test_top1": 50.0})
        );
        std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
    }

    #[test]
    fn the_report_times_levels_and_costs_shapes_against_the_baseline() {
        let out = std::env::temp_dir().join(format!("mg-speedup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        // Baseline: one shape, 100 units of work per second; final 80%.
        let base_shape = json!([{"stage": 0, "frames": 4, "crop": 10, "batch": 2, "steps": 10,
                                 "seconds": 80.0, "clips": 20, "work": 8000.0, "macs": 16000.0}]);
        for seed in 0..2 {
            write_run(
                &out.join(format!("baseline-s{seed}")),
                &[(25.0, 20.0), (50.0, 60.0), (100.0, 80.0)],
                100.0,
                base_shape.clone(),
                80.0,
            );
        }
        // Multigrid: a quarter of the work, its small shape at twice the cost per unit.
        let mg_shapes = json!([
            {"stage": 0, "frames": 2, "crop": 10, "batch": 4, "steps": 5, "seconds": 20.0, "clips": 20, "work": 1000.0, "macs": 4000.0},
            {"stage": 1, "frames": 4, "crop": 10, "batch": 2, "steps": 5, "seconds": 10.0, "clips": 10, "work": 1000.0, "macs": 2000.0}
        ]);
        for (seed, reach) in [(0, 10.0), (1, 20.0)] {
            write_run(
                &out.join(format!("multigrid-s{seed}")),
                &[(reach, 45.0), (40.0, 81.0)],
                40.0,
                mg_shapes.clone(),
                30.0,
            );
        }
        let r = report(&out, 10).unwrap();
        assert_eq!(r["wall_ratio"].as_f64().unwrap(), 2.5);
        assert_eq!(r["work_ratio"].as_f64().unwrap(), 4.0);
        assert_eq!(r["step_ratio"].as_f64().unwrap(), 80.0 / 30.0);
        // 50% of 80 = 40: the baseline first gets there at 50 s, multigrid at 10 and 20 s.
        let l = &r["time_to_accuracy"][0];
        assert_eq!(l["top1"].as_f64().unwrap(), 40.0);
        assert_eq!(l["ratio"]["mean"].as_f64().unwrap(), (5.0 + 2.5) / 2.0);
        let costs: Vec<f64> = r["multigrid_shapes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["relative_cost"].as_f64().unwrap())
            .collect();
        assert_eq!(costs, [2.0, 1.0]);
        // Multiply-adds: 16000 against 6000 per run; the small shape has twice the base's
        // multiply-adds per unit of work, so per multiply-add it costs the same as the base.
        assert_eq!(r["mac_ratio"].as_f64().unwrap(), 16000.0 / 6000.0);
        let per_mac: Vec<f64> = r["multigrid_shapes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["relative_cost_per_mac"].as_f64().unwrap())
            .collect();
        assert_eq!(per_mac, [1.0, 1.0]);
        // At 25% of its run (25 s) the baseline had 20%, 60 points below its final.
        assert!(r["criteria"][0]["pass"].as_bool().unwrap());
        assert!(out.join("accuracy_vs_time.svg").exists());
        assert!(out.join("accuracy_vs_time.png").exists());
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn stats_are_mean_and_sample_deviation() {
        assert_eq!(stats(&[]), None);
        assert_eq!(stats(&[3.0]), Some((3.0, 0.0)));
        let (m, s) = stats(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((m, s), (2.0, 1.0));
    }
}
