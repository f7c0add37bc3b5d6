//! The speedup benchmark's figures, from its runs' metrics records: per schedule the mean and
//! spread over seeds, the time each run first reaches each accuracy level, the cost of each
//! training shape against the baseline's, and the task's criteria.

use std::collections::BTreeMap;
use std::path::Path;

use multigrid::train::metrics::{read_records, Record, SummaryRecord, TimingRecord};

use super::KINDS;

/// Accuracy levels, as fractions of the baseline's mean final val top-1, whose first arrival
/// each run is timed at.
const LEVELS: [f64; 3] = [0.5, 0.7, 0.9];

/// One finished run, from its metrics.jsonl.
pub struct Run {
    pub name: String,
    /// Index into [`KINDS`].
    pub kind: usize,
    pub records: Vec<Record>,
    /// (wall seconds, val top-1) of each evaluation.
    pub evals: Vec<(f64, f64)>,
    pub summary: SummaryRecord,
    pub timing: Option<TimingRecord>,
}

impl Run {
    /// Seconds of the timing line that `f` picks; 0 without a timing line.
    fn timing(&self, f: impl Fn(&TimingRecord) -> f64) -> f64 {
        self.timing.as_ref().map_or(0.0, f)
    }
}

fn read_run(dir: &Path, name: &str, kind: usize) -> Result<Run, String> {
    let records = read_records(&dir.join("metrics.jsonl")).map_err(|e| e.to_string())?;
    let summary = records
        .iter()
        .find_map(|r| match r {
            Record::Summary(s) => Some(s.clone()),
            _ => None,
        })
        .ok_or_else(|| format!("{} has no summary line: did it finish?", dir.display()))?;
    let evals = records
        .iter()
        .filter_map(|r| match r {
            Record::Eval(e) if e.top1.is_finite() => Some((e.wall_s, e.top1)),
            _ => None,
        })
        .collect();
    let timing = records.iter().find_map(|r| match r {
        Record::Timing(t) => Some(with_macs(dir, t.clone())),
        _ => None,
    });
    Ok(Run {
        name: name.to_string(),
        kind,
        records,
        evals,
        summary,
        timing,
    })
}

/// Runs from before the timing line carried multiply-adds get them from the model of the
/// config their checkpoints hold; without a checkpoint they stay absent.
fn with_macs(dir: &Path, mut timing: TimingRecord) -> TimingRecord {
    if timing.shapes.iter().all(|s| s.macs.is_some()) {
        return timing;
    }
    let model = multigrid::train::checkpoint::list(&dir.join("checkpoints"))
        .ok()
        .and_then(|l| l.last().cloned())
        .and_then(|(_, ckpt)| multigrid::train::checkpoint::read_manifest(&ckpt).ok())
        .and_then(|m| {
            let vs = tch::nn::VarStore::new(tch::Device::Cpu);
            multigrid::model::Network::new(&vs.root(), &m.config.model).ok()
        });
    if let Some(model) = model {
        for s in timing.shapes.iter_mut().filter(|s| s.macs.is_none()) {
            s.macs = Some(s.clips as f64 * model.macs(s.frames as i64, s.crop as i64));
        }
    }
    timing
}

/// Runs under `out`: `baseline-sN` and `multigrid-sN`, or a single `baseline` and `multigrid`
/// (what `make demo` writes).
pub fn find_runs(out: &Path) -> Result<Vec<Run>, String> {
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

/// Mean and sample standard deviation over runs; None for no values.
pub type MeanStd = Option<(f64, f64)>;

/// Mean and sample standard deviation (0 for one value); None for no values.
pub fn stats(xs: &[f64]) -> MeanStd {
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

fn mean(s: MeanStd) -> f64 {
    s.map_or(f64::NAN, |s| s.0)
}

/// The statistics of `f` over the runs that have it.
fn figure(runs: &[&Run], f: impl Fn(&Run) -> Option<f64>) -> MeanStd {
    stats(&runs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
}

/// The first wall-clock time at which a run's val top-1 reached `level`.
fn first_reaching(run: &Run, level: f64) -> Option<f64> {
    run.evals.iter().find(|e| e.1 >= level).map(|e| e.0)
}

/// Seconds, work and multiply-adds per training shape, pooled over runs: (stage, frames, crop,
/// batch) -> (steps, seconds, work, macs). Runs from before `macs` was logged have 0 there.
type ShapeTable = BTreeMap<(u64, u64, u64, u64), (u64, f64, f64, f64)>;

fn shapes(runs: &[&Run]) -> ShapeTable {
    let mut t = ShapeTable::new();
    for s in runs
        .iter()
        .flat_map(|r| r.timing.iter().flat_map(|t| &t.shapes))
    {
        let e = t
            .entry((u64::from(s.stage), s.frames, s.crop, s.batch))
            .or_insert((0, 0.0, 0.0, 0.0));
        e.0 += s.steps;
        e.1 += s.seconds;
        e.2 += s.work;
        e.3 += s.macs.unwrap_or(0.0);
    }
    t
}

/// One schedule's figures over its seeds.
pub struct KindFigures {
    pub runs: Vec<String>,
    pub wall: MeanStd,
    pub val: MeanStd,
    pub test: MeanStd,
    pub eval: MeanStd,
    pub precise: MeanStd,
    pub data: MeanStd,
    pub checkpoint: MeanStd,
    pub step: MeanStd,
}

/// When the runs first reach one accuracy level; seed k of the baseline against seed k of
/// multigrid for the ratio.
pub struct Level {
    pub fraction: f64,
    pub top1: f64,
    /// Seconds, over the runs that reached it: baseline, multigrid.
    pub seconds: [MeanStd; 2],
    pub ratio: MeanStd,
    /// Runs that reached it, and runs: baseline, multigrid.
    pub reached: [usize; 2],
    pub runs: [usize; 2],
}

/// A multigrid training shape's cost against the baseline's.
pub struct ShapeCost {
    /// (stage, frames, crop, batch).
    pub shape: (u64, u64, u64, u64),
    pub steps: u64,
    pub seconds: f64,
    pub work: f64,
    pub macs: f64,
    /// Seconds per unit of work, and per multiply-add, over the baseline's.
    pub relative_cost: f64,
    pub relative_cost_per_mac: f64,
    /// Multiply-adds per unit of work over the baseline's: what rounding up the strided
    /// feature maps adds at this crop.
    pub macs_per_work: f64,
}

pub struct Criterion {
    pub what: &'static str,
    pub pass: bool,
    pub figures: String,
}

/// Everything the report prints and writes.
pub struct Analysis {
    pub classes: usize,
    pub chance: f64,
    /// Baseline, multigrid.
    pub kinds: [KindFigures; 2],
    pub base_final: f64,
    pub wall_ratio: f64,
    pub step_ratio: f64,
    pub work_ratio: f64,
    /// NaN without multiply-adds logged (runs from before they were).
    pub mac_ratio: f64,
    pub base_cost: f64,
    pub levels: Vec<Level>,
    pub shapes: Vec<ShapeCost>,
    pub criteria: Vec<Criterion>,
}

fn kind_figures(rs: &[&Run]) -> KindFigures {
    let timing = |f: fn(&TimingRecord) -> f64| figure(rs, move |r| Some(r.timing(f)));
    KindFigures {
        runs: rs.iter().map(|r| r.name.clone()).collect(),
        wall: figure(rs, |r| Some(r.summary.wall_s)),
        val: figure(rs, |r| r.summary.top1),
        test: figure(rs, |r| r.summary.test_top1),
        eval: timing(|t| t.eval_s),
        precise: timing(|t| t.precise_bn_s),
        data: timing(|t| t.data_wait_s),
        checkpoint: timing(|t| t.checkpoint_s),
        step: timing(|t| t.step_s),
    }
}

pub fn analyse(runs: &[Run], classes: usize) -> Analysis {
    let of = |k: usize| runs.iter().filter(|r| r.kind == k).collect::<Vec<_>>();
    let (base, mg) = (of(0), of(1));
    let chance = 100.0 / classes.max(1) as f64;
    let kinds = [kind_figures(&base), kind_figures(&mg)];
    let base_final = mean(kinds[0].val);
    let wall_ratio = mean(kinds[0].wall) / mean(kinds[1].wall);

    let levels = LEVELS
        .iter()
        .map(|&fraction| {
            let top1 = fraction * base_final;
            let times = |rs: &[&Run]| {
                rs.iter()
                    .map(|r| first_reaching(r, top1))
                    .collect::<Vec<_>>()
            };
            let (bt, mt) = (times(&base), times(&mg));
            let ratios: Vec<f64> = bt
                .iter()
                .zip(&mt)
                .filter_map(|(b, m)| Some(b.as_ref()? / m.as_ref()?))
                .collect();
            let reached = |t: &[Option<f64>]| t.iter().flatten().copied().collect::<Vec<_>>();
            let (b, m) = (reached(&bt), reached(&mt));
            Level {
                fraction,
                top1,
                seconds: [stats(&b), stats(&m)],
                ratio: stats(&ratios),
                reached: [b.len(), m.len()],
                runs: [bt.len(), mt.len()],
            }
        })
        .collect();

    // Where the time goes: each multigrid shape's seconds per unit of work against the
    // baseline's shape.
    let (bs, ms) = (shapes(&base), shapes(&mg));
    type Column = fn(&(u64, f64, f64, f64)) -> f64;
    let total = |t: &ShapeTable, f: Column| t.values().map(f).sum::<f64>();
    let (seconds, work, macs): (Column, Column, Column) = (|v| v.1, |v| v.2, |v| v.3);
    let base_cost = total(&bs, seconds) / total(&bs, work);
    let base_mac_cost = total(&bs, seconds) / total(&bs, macs);
    let ratio = |f: Column| (total(&bs, f) / base.len() as f64) / (total(&ms, f) / mg.len() as f64);
    let mac_ratio = if total(&bs, macs) > 0.0 && total(&ms, macs) > 0.0 {
        ratio(macs)
    } else {
        f64::NAN
    };
    let base_density = total(&bs, macs) / total(&bs, work);
    let shape_costs = ms
        .iter()
        .map(|(&shape, &(steps, secs, w, m))| ShapeCost {
            shape,
            steps,
            seconds: secs,
            work: w,
            macs: m,
            relative_cost: (secs / w) / base_cost,
            relative_cost_per_mac: (secs / m) / base_mac_cost,
            macs_per_work: (m / w) / base_density,
        })
        .collect();

    // The task has to behave like Kinetics for the ratios to mean what the paper's do.
    let at_quarter: Vec<f64> = base
        .iter()
        .map(|r| {
            r.evals
                .iter()
                .take_while(|e| e.0 <= 0.25 * r.summary.wall_s)
                .last()
                .map_or(chance, |e| e.1)
        })
        .collect();
    let quarter = mean(stats(&at_quarter));
    let criteria = vec![
        Criterion {
            what:
                "the baseline's val top-1 at 25% of its run is at least 10 points below its final",
            pass: base_final - quarter >= 10.0,
            figures: format!("{quarter:.1}% vs {base_final:.1}%"),
        },
        Criterion {
            what: "the baseline's final val top-1 is below 95%",
            pass: base_final < 95.0,
            figures: format!("{base_final:.1}%"),
        },
        Criterion {
            what: "chance is far below both (under half of each)",
            pass: chance < 0.5 * quarter.min(base_final),
            figures: format!("chance {chance:.1}%"),
        },
    ];
    let step_ratio = mean(kinds[0].step) / mean(kinds[1].step);
    Analysis {
        classes,
        chance,
        kinds,
        base_final,
        wall_ratio,
        step_ratio,
        work_ratio: ratio(work),
        mac_ratio,
        base_cost,
        levels,
        shapes: shape_costs,
        criteria,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_mean_and_sample_deviation() {
        assert_eq!(stats(&[]), None);
        assert_eq!(stats(&[3.0]), Some((3.0, 0.0)));
        let (m, s) = stats(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((m, s), (2.0, 1.0));
    }
}
