//! The speedup benchmark's report: the tables it prints, `speedup.json` and the
//! accuracy-vs-time chart.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::stats::{Analysis, MeanStd, Run};
use super::KINDS;

fn ms(s: MeanStd) -> Value {
    s.map_or(Value::Null, |(m, d)| json!({"mean": m, "std": d}))
}

fn fmt(s: MeanStd, digits: usize) -> String {
    s.map_or("-".into(), |(m, d)| format!("{m:.digits$} ± {d:.digits$}"))
}

/// The report's tables on stdout.
pub fn print(a: &Analysis) {
    println!(
        "{:<11} {:>5} {:>16} {:>14} {:>14} {:>10} {:>10} {:>10}",
        "run", "seeds", "wall s", "val top-1", "test top-1", "eval s", "precise s", "data s"
    );
    for (k, f) in a.kinds.iter().enumerate() {
        println!(
            "{:<11} {:>5} {:>16} {:>14} {:>14} {:>10} {:>10} {:>10}",
            KINDS[k],
            f.runs.len(),
            fmt(f.wall, 1),
            fmt(f.val, 1),
            fmt(f.test, 1),
            fmt(f.eval, 0),
            fmt(f.precise, 0),
            fmt(f.data, 0)
        );
    }

    println!(
        "\ntime to first reach a val top-1 level (levels: fractions of the baseline's mean final {:.1}%):",
        a.base_final
    );
    for l in &a.levels {
        println!(
            "  {:>3.0}% ({:.1}%): baseline {} s ({}/{} runs), multigrid {} s ({}/{}), ratio {}",
            l.fraction * 100.0,
            l.top1,
            fmt(l.seconds[0], 1),
            l.reached[0],
            l.runs[0],
            fmt(l.seconds[1], 1),
            l.reached[1],
            l.runs[1],
            fmt(l.ratio, 2)
        );
    }

    println!("\nmultigrid training steps by shape (relative cost: seconds per unit of work, clips x frames x crop^2, and per multiply-add, over the baseline's):");
    println!(
        "  {:>5} {:>6} {:>5} {:>5} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "stage", "frames", "crop", "batch", "steps", "s/step", "MACs/work", "cost/work", "cost/MAC"
    );
    for c in &a.shapes {
        let (stage, t, s, n) = c.shape;
        println!(
            "  {stage:>5} {t:>6} {s:>5} {n:>5} {:>7} {:>9.3} {:>9.2} {:>9.2} {:>9.2}",
            c.steps,
            c.seconds / c.steps.max(1) as f64,
            c.macs_per_work,
            c.relative_cost,
            c.relative_cost_per_mac
        );
    }
    println!(
        "\nwhole runs: wall-clock {:.2}x, training steps alone {:.2}x, work {:.2}x, \
         multiply-adds {:.2}x: {:.0}% of the work saved and {:.0}% of the multiply-adds saved reach the wall clock",
        a.wall_ratio,
        a.step_ratio,
        a.work_ratio,
        a.mac_ratio,
        100.0 * a.wall_ratio / a.work_ratio,
        100.0 * a.wall_ratio / a.mac_ratio
    );

    println!("\ntask criteria:");
    for c in &a.criteria {
        let mark = if c.pass { "pass" } else { "FAIL" };
        println!("  [{mark}] {} ({})", c.what, c.figures);
    }
}

/// `speedup.json`.
pub fn to_json(a: &Analysis) -> Value {
    let kinds: Vec<Value> = a
        .kinds
        .iter()
        .map(|f| {
            json!({
                "runs": f.runs, "wall_s": ms(f.wall), "val_top1": ms(f.val),
                "test_top1": ms(f.test), "eval_s": ms(f.eval), "precise_bn_s": ms(f.precise),
                "data_wait_s": ms(f.data), "checkpoint_s": ms(f.checkpoint),
                "step_s": ms(f.step),
            })
        })
        .collect();
    let levels: Vec<Value> = a
        .levels
        .iter()
        .map(|l| {
            json!({"fraction": l.fraction, "top1": l.top1, "baseline_s": ms(l.seconds[0]),
                "multigrid_s": ms(l.seconds[1]), "ratio": ms(l.ratio),
                "baseline_reached": l.reached[0], "multigrid_reached": l.reached[1]})
        })
        .collect();
    let shapes: Vec<Value> = a
        .shapes
        .iter()
        .map(|c| {
            let (stage, frames, crop, batch) = c.shape;
            json!({"stage": stage, "frames": frames, "crop": crop, "batch": batch,
                "steps": c.steps, "seconds": c.seconds, "work": c.work, "macs": c.macs,
                "relative_cost": c.relative_cost,
                "relative_cost_per_mac": c.relative_cost_per_mac,
                "macs_per_work": c.macs_per_work})
        })
        .collect();
    let criteria: Vec<Value> = a
        .criteria
        .iter()
        .map(|c| json!({"criterion": c.what, "pass": c.pass, "figures": c.figures}))
        .collect();
    json!({
        "classes": a.classes, "chance_top1": a.chance,
        "baseline": kinds[0], "multigrid": kinds[1],
        "wall_ratio": a.wall_ratio, "step_ratio": a.step_ratio, "work_ratio": a.work_ratio,
        "wall_over_work": a.wall_ratio / a.work_ratio, "mac_ratio": a.mac_ratio,
        "wall_over_macs": a.wall_ratio / a.mac_ratio,
        "time_to_accuracy": levels, "multigrid_shapes": shapes,
        "baseline_cost_s_per_work": a.base_cost,
        "criteria": criteria,
    })
}

/// The runs' accuracy and loss against wall-clock time, seeds of a schedule in shades of its
/// hue, as `out/accuracy_vs_time.svg` and `.png`; returns both paths.
pub fn draw(out: &Path, runs: &[Run]) -> Result<(PathBuf, PathBuf), String> {
    let curves: Vec<_> = runs
        .iter()
        .map(|r| {
            let shade = runs
                .iter()
                .filter(|o| o.kind == r.kind)
                .position(|o| o.name == r.name)
                .unwrap_or(0);
            crate::chart::curve(&r.records, &r.name, r.kind, shade)
        })
        .collect();
    let svg = out.join("accuracy_vs_time.svg");
    let png = crate::chart::draw(&curves, &svg)?;
    Ok((svg, png))
}
