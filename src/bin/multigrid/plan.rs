//! `multigrid plan`: a config's stages and, with a dataset size, its plan against the
//! baseline's, as a table or JSON.

use multigrid::{Config, Plan, Schedule};
use serde_json::json;

pub fn run(a: &crate::PlanArgs) -> Result<(), String> {
    let (path, dataset_size, world_size, as_json) =
        (&a.config, a.dataset_size, a.world_size, a.json);
    let schedule = Schedule::new(Config::from_file(path).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    Plan::check_world_size(&schedule, world_size).map_err(|e| format!("--world-size: {e}"))?;
    let plans = match dataset_size {
        Some(n) => {
            let plan = Plan::new(&schedule, n, world_size, 0, 0).map_err(|e| e.to_string())?;
            let baseline = schedule.baseline().map_err(|e| e.to_string())?;
            let base_plan = Plan::new(&baseline, n, world_size, 0, 0).map_err(|e| e.to_string())?;
            Some((plan, base_plan))
        }
        None => None,
    };
    let rows: Vec<StageRow> = (0..schedule.stages().len())
        .map(|i| StageRow::new(&schedule, i, world_size, plans.as_ref().map(|p| &p.0)))
        .collect();
    if as_json {
        print_json(&schedule, &rows, plans.as_ref(), world_size, dataset_size);
    } else {
        print_table(&schedule, &rows, plans.as_ref(), world_size);
    }
    Ok(())
}

struct StageRow {
    stage: multigrid::Stage,
    start: u32,
    lr: (f64, f64),
    batch_sizes: Vec<u32>,
    crops: Vec<u32>,
    bn: multigrid::schedule::BnGrouping,
    rate: [u32; 2],
    eval_epochs: Vec<u32>,
    steps: Option<u64>,
}

impl StageRow {
    fn new(s: &Schedule, i: usize, world: u32, plan: Option<&Plan>) -> StageRow {
        let stage = s.stages()[i];
        let start = s.stage_start(i);
        let base = stage.batch_factor * s.config().train.batch_size / world;
        let end = stage.end_epoch.max(start);
        StageRow {
            stage,
            start,
            // Epochs of the stage table are finite and >= 0: the LR query cannot refuse them.
            lr: (
                s.policy_lr_at(f64::from(start)).unwrap_or(f64::NAN),
                s.policy_lr_at(f64::from(end.max(start + 1)) - 1e-9)
                    .unwrap_or(f64::NAN),
            ),
            batch_sizes: s
                .short_cycle_batch_factors(i)
                .iter()
                .map(|f| f * base)
                .collect(),
            crops: s.short_cycle_crops(i),
            bn: s.bn_grouping(i, world),
            rate: s.sampling_rate_range(i),
            eval_epochs: (start..end)
                .filter(|&e| s.stage_index_at(e) == i && s.is_eval_epoch(e))
                .collect(),
            steps: plan.map(|p| p.steps_in_stage(i)),
        }
    }
}

fn list(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn print_table(s: &Schedule, rows: &[StageRow], plans: Option<&(Plan, Plan)>, world: u32) {
    let c = s.config();
    println!(
        "mode {:?}: T0 {} S0 {} B0 {} (global, {} rank{}), {} epochs (baseline {})",
        s.mode(),
        c.data.num_frames,
        c.data.train_crop_size,
        c.train.batch_size,
        world,
        if world == 1 { "" } else { "s" },
        s.max_epoch(),
        c.solver.max_epoch
    );
    let header = format!(
        "{:>5} {:>9} {:>3} {:>12} {:>17} {:>15} {:>11} {:>4} {:>6} {:>14}",
        "stage",
        "epochs",
        "lr#",
        "base b,T,S",
        "lr",
        "batch/rank",
        "crops",
        "bn",
        "stride",
        "eval after"
    );
    let steps_hdr = if plans.is_some() { "      steps" } else { "" };
    println!("{header}{steps_hdr}");
    for (i, r) in rows.iter().enumerate() {
        let lr = if (r.lr.0 - r.lr.1).abs() > 1e-12 * r.lr.0.abs() {
            format!("{:.4e}>{:.4e}", r.lr.0, r.lr.1)
        } else {
            format!("{:.4e}", r.lr.0)
        };
        let bn = if r.bn.sync_ranks > 1 {
            format!("s{}", r.bn.sync_ranks)
        } else {
            r.bn.groups.to_string()
        };
        let stride = if r.rate[0] == r.rate[1] {
            r.rate[0].to_string()
        } else {
            format!("{}-{}", r.rate[0], r.rate[1])
        };
        print!(
            "{:>5} {:>9} {:>3} {:>12} {:>17} {:>15} {:>11} {:>4} {:>6} {:>14}",
            i,
            format!("{}-{}", r.start, r.stage.end_epoch),
            r.stage.lr_stage,
            format!(
                "{},{},{}",
                r.stage.batch_factor, r.stage.num_frames, r.stage.crop_size
            ),
            lr,
            list(&r.batch_sizes),
            list(&r.crops),
            bn,
            stride,
            list(&r.eval_epochs)
        );
        match r.steps {
            Some(n) => println!(" {n:>10}"),
            None => println!(),
        }
    }
    println!(
        "solver.steps {:?}\nsolver.lrs (relative) {:?}\nsolver.max_epoch {}",
        s.steps(),
        s.lrs(),
        s.max_epoch()
    );
    if c.solver.warmup_epochs > 0.0 {
        println!(
            "warm-up: {} -> {:.4e} over epochs 0-{}",
            c.solver.warmup_start_lr,
            s.policy_lr_at(c.solver.warmup_epochs).unwrap_or(f64::NAN),
            c.solver.warmup_epochs
        );
    }
    if let Some((plan, base)) = plans {
        let (a, b) = (plan.total_steps(), base.total_steps());
        println!(
            "steps: {a} multigrid vs {b} baseline ({:.2}x fewer) for {} clips on {world} rank{}",
            b as f64 / a as f64,
            plan.dataset_size(),
            if world == 1 { "" } else { "s" }
        );
        let (wa, wb) = (plan.work(), base.work());
        println!(
            "work per rank (clips x frames x pixels, what FLOPs scale with): {wa:.3e} multigrid vs {wb:.3e} baseline ({:.2}x less)",
            wb / wa
        );
    }
}

fn print_json(
    s: &Schedule,
    rows: &[StageRow],
    plans: Option<&(Plan, Plan)>,
    world: u32,
    dataset_size: Option<u64>,
) {
    let stages: Vec<_> = rows
        .iter()
        .map(|r| {
            let mut v = json!({
                "lr_stage": r.stage.lr_stage,
                "batch_factor": r.stage.batch_factor,
                "num_frames": r.stage.num_frames,
                "crop_size": r.stage.crop_size,
                "start_epoch": r.start,
                "end_epoch": r.stage.end_epoch,
                "lr": r.lr.0,
                "short_cycle_batch_sizes": r.batch_sizes,
                "short_cycle_crops": r.crops,
                "bn_groups": r.bn.groups,
                "bn_sync_ranks": r.bn.sync_ranks,
                "sampling_rate": r.rate,
                "eval_epochs": r.eval_epochs,
            });
            if let Some(n) = r.steps {
                v["steps"] = json!(n);
            }
            v
        })
        .collect();
    let mut out = json!({
        "mode": s.mode(),
        "world_size": world,
        "stages": stages,
        "solver": {"steps": s.steps(), "lrs": s.lrs(), "max_epoch": s.max_epoch()},
        "eval_epochs": s.eval_epochs(),
    });
    if let (Some((plan, base)), Some(n)) = (plans, dataset_size) {
        out["dataset_size"] = json!(n);
        out["total_steps"] = json!(plan.total_steps());
        out["work"] = json!(plan.work());
        out["baseline"] = json!({
            "max_epoch": base.schedule().max_epoch(),
            "total_steps": base.total_steps(),
            "work": base.work(),
        });
    }
    println!("{out:#}");
}
