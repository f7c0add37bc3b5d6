//! `multigrid demo`: baseline and multigrid training of the tiny SlowFast on synthetic data,
//! side by side, with the accuracy-vs-time plot.

use std::path::Path;

use multigrid::data::Task;
use multigrid::train::Summary;

use crate::gen_data::ensure_stores;
use crate::output::clear_own_output;
use crate::plot::plot;
use crate::train::train;
use crate::Overrides;

/// The demo's configs, compiled in, so an installed `multigrid demo` runs from any directory:
/// (run name, the file it came from, its text).
const DEMO_CONFIGS: [(&str, &str, &str); 2] = [
    (
        "baseline",
        "configs/synthetic_slowfast_tiny.json",
        include_str!("../../../configs/synthetic_slowfast_tiny.json"),
    ),
    (
        "multigrid",
        "configs/synthetic_slowfast_tiny_multigrid.json",
        include_str!("../../../configs/synthetic_slowfast_tiny_multigrid.json"),
    ),
];

/// Trains the baseline config and then the multigrid one into `out/baseline` and
/// `out/multigrid` (each run's config written there first, as `config.json`), prints the
/// side-by-side table and writes the accuracy-vs-time plot.
fn compare(
    configs: [(&str, &str, &str); 2],
    data: &Path,
    out: &Path,
    overrides: &Overrides,
) -> Result<Vec<(&'static str, Summary)>, String> {
    let mut rows = Vec::new();
    for ((name, source, text), kind) in configs.into_iter().zip(["baseline", "multigrid"]) {
        debug_assert_eq!(name, kind);
        eprintln!("== {kind}: {source}");
        let dir = out.join(kind);
        let config = dir.join("config.json");
        std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&config, text))
            .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        let o = Overrides {
            data: Some(data.to_path_buf()),
            ..overrides.clone()
        };
        let s = train(&config, &dir, false, None, &o)?;
        rows.push((kind, s));
    }
    let fmt =
        |a: Option<multigrid::train::Accuracy>| a.map_or("-".into(), |a| format!("{:.1}", a.top1));
    println!(
        "\n{:<10} {:>10} {:>7} {:>8} {:>10} {:>10}",
        "run", "wall s", "steps", "clips", "val top-1", "test top-1"
    );
    for (name, s) in &rows {
        println!(
            "{:<10} {:>10.1} {:>7} {:>8} {:>10} {:>10}",
            name,
            s.wall_seconds,
            s.steps,
            s.clips_seen,
            fmt(s.final_val),
            fmt(s.test)
        );
    }
    println!(
        "wall-clock speedup of the whole multigrid run over the baseline: {:.2}x",
        rows[0].1.wall_seconds / rows[1].1.wall_seconds
    );
    let chart = out.join("accuracy_vs_time.svg");
    plot(&[out.join("baseline"), out.join("multigrid")], &chart)?;
    Ok(rows)
}

/// The main job: synthetic data if missing, baseline and multigrid training of the tiny
/// SlowFast, a side-by-side table and the accuracy-vs-time plot.
pub fn run(a: &crate::DemoArgs) -> Result<(), String> {
    let (data, out) = (a.data.as_path(), a.out.as_path());
    let overrides = &Overrides {
        device: a.device.clone(),
        data: None,
        set: a.set.clone(),
        opts: Vec::new(),
    };
    // Before the data, which takes minutes: a wrong --out fails at once.
    clear_own_output(out, |name| {
        ["baseline", "multigrid"].contains(&name) || name.starts_with("accuracy_vs_time.")
    })?;
    ensure_stores(data, 3000, Task::Simple)?;
    compare(DEMO_CONFIGS, data, out, overrides).map(drop)
}
