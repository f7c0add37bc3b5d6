//! `multigrid bench speedup`: the paper's comparison on synthetic video. The baseline and the
//! multigrid schedule each run their full schedule for several seeds; the report gives final
//! val and test top-1, the whole-run wall-clock ratio, the time each run first reaches a list
//! of accuracy levels, where the wall-clock time went (training steps per shape, data wait,
//! evaluation, precise BN, checkpoints) against the plan's work, and whether the task behaved
//! as the benchmark needs (still improving late, not saturated, far above chance).
//!
//! This module runs the benchmark; `stats.rs` computes the figures from the runs' metrics,
//! `report.rs` prints them, writes `speedup.json` and draws the chart.

mod report;
mod stats;

use std::path::{Path, PathBuf};

use multigrid::data::Task;
use serde_json::Value;

use crate::gen_data::ensure_stores;
use crate::output::clear_own_output;
use crate::train::train;
use crate::{Overrides, SpeedupArgs};

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

pub fn run(a: &SpeedupArgs) -> Result<(), String> {
    if a.seeds == 0 {
        return Err("--seeds must be at least 1".into());
    }
    let data = a.data.clone().unwrap_or_else(|| {
        PathBuf::from(match a.task {
            Task::Hard => "data/synthetic_hard",
            Task::Simple => "data/synthetic_speedup",
        })
    });
    if !a.report_only {
        // Before the data, which takes minutes: a wrong --out fails at once.
        clear_own_output(&a.out, |name| {
            KINDS.iter().any(|k| name.starts_with(&format!("{k}-s")))
                || name == "speedup.json"
                || name.starts_with("accuracy_vs_time.")
        })?;
        ensure_stores(&data, a.clips.into(), a.task)?;
        for seed in 0..a.seeds {
            for (kind, config) in KINDS.iter().zip(configs(a.task, a.quick)) {
                eprintln!("== {kind}, seed {seed}: {config}");
                let mut set = a.set.clone();
                set.push(format!("run.seed={seed}"));
                let ov = Overrides {
                    device: a.device.clone(),
                    data: Some(data.clone()),
                    set,
                    opts: Vec::new(),
                };
                train(
                    Path::new(config),
                    &a.out.join(format!("{kind}-s{seed}")),
                    false,
                    None,
                    &ov,
                )?;
            }
        }
    }
    let classes = std::fs::read_to_string(data.join("classes.txt"))
        .map(|t| t.lines().count())
        .unwrap_or_else(|_| a.task.class_names().len());
    let report = report_runs(&a.out, classes)?;
    let path = a.out.join("speedup.json");
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, format!("{report:#}\n")).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("summary: {}", path.display());
    Ok(())
}

/// The runs under `out`, analysed, printed and drawn; the JSON of `speedup.json`.
fn report_runs(out: &Path, classes: usize) -> Result<Value, String> {
    let runs = stats::find_runs(out)?;
    let analysis = stats::analyse(&runs, classes);
    report::print(&analysis);
    let (svg, png) = report::draw(out, &runs)?;
    println!("\nplot: {} and {}", svg.display(), png.display());
    Ok(report::to_json(&analysis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use multigrid::train::metrics::{
        EvalRecord, Metrics, Record, ShapeTiming, SummaryRecord, TimingRecord, TrainRecord,
    };

    fn shape(
        key: [u64; 4],
        steps: u64,
        seconds: f64,
        clips: u64,
        work_macs: [f64; 2],
    ) -> ShapeTiming {
        ShapeTiming {
            stage: key[0] as u32,
            frames: key[1],
            crop: key[2],
            batch: key[3],
            steps,
            seconds,
            clips,
            data_wait_s: 0.0,
            work: work_macs[0],
            macs: Some(work_macs[1]),
        }
    }

    /// A run's metrics, written as the trainer writes them.
    fn write_run(
        dir: &Path,
        evals: &[(f64, f64)],
        wall: f64,
        shapes: Vec<ShapeTiming>,
        step_s: f64,
    ) {
        std::fs::create_dir_all(dir).unwrap();
        let _ = std::fs::remove_file(dir.join("metrics.jsonl"));
        let mut m = Metrics::open(&dir.join("metrics.jsonl")).unwrap();
        let mut write = |r: Record| m.write(r.to_value().unwrap()).unwrap();
        for (i, &(w, a)) in evals.iter().enumerate() {
            write(Record::Train(TrainRecord {
                step: i as u64,
                epoch: i as u32,
                stage: 0,
                shape: [2, 4, 10],
                bn_groups: 1,
                bn_sync_ranks: 1,
                lr: 0.1,
                loss: 2.0 - i as f64 * 0.1,
                clips_per_s: 1.0,
                data_wait_s: 0.0,
                data_failures: 0,
                wall_s: w,
                clips_seen: 2 * (i as u64 + 1),
            }));
            write(Record::Eval(EvalRecord {
                split: "val".into(),
                step: i as u64,
                epoch: i as u32,
                top1: a,
                top5: 100.0,
                map: None,
                clips: 10,
                wall_s: w,
                clips_seen: 2 * (i as u64 + 1),
                shape: Some([4, 10]),
                protocol: None,
                seconds: Some(0.1),
            }));
        }
        write(Record::Timing(TimingRecord {
            shapes,
            step_s,
            data_wait_s: 0.2,
            eval_s: 5.0,
            checkpoint_s: 0.5,
            precise_bn_s: 1.0,
            grad_reduce_s: 0.0,
            cuda_graphs: 0,
        }));
        write(Record::Summary(SummaryRecord {
            wall_s: wall,
            steps: evals.len() as u64,
            clips_seen: 2 * evals.len() as u64,
            top1: Some(evals.last().unwrap().1),
            top5: None,
            test_top1: Some(50.0),
            test_top5: None,
            map: None,
            test_map: None,
            cancelled: false,
            preempted: None,
        }));
    }

    #[test]
    fn the_report_times_levels_and_costs_shapes_against_the_baseline() {
        let out = std::env::temp_dir().join(format!("mg-speedup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        // Baseline: one shape, 100 units of work per second; final 80%.
        let base_shape = vec![shape([0, 4, 10, 2], 10, 80.0, 20, [8000.0, 16000.0])];
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
        let mg_shapes = vec![
            shape([0, 2, 10, 4], 5, 20.0, 20, [1000.0, 4000.0]),
            shape([1, 4, 10, 2], 5, 10.0, 10, [1000.0, 2000.0]),
        ];
        for (seed, reach) in [(0, 10.0), (1, 20.0)] {
            write_run(
                &out.join(format!("multigrid-s{seed}")),
                &[(reach, 45.0), (40.0, 81.0)],
                40.0,
                mg_shapes.clone(),
                30.0,
            );
        }
        let r = report_runs(&out, 10).unwrap();
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
}
