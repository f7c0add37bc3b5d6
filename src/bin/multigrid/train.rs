//! `multigrid train`, `eval`, `demo` and `plot`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

use multigrid::train::{Summary, Trainer};
use multigrid::Config;

/// Command-line changes to a config file, applied in order: `--device`, `--data` and any number
/// of `--set SECTION.KEY=VALUE` (PySlowFast's trailing `SOLVER.BASE_LR 0.1` opts; keys are
/// case-insensitive, VALUE is JSON or else a string).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub device: Option<String>,
    pub data: Option<PathBuf>,
    pub set: Vec<String>,
}

pub fn load_config(path: &Path, o: &Overrides) -> Result<Config, String> {
    let mut c = Config::from_file(path).map_err(|e| e.to_string())?;
    if let Some(d) = &o.device {
        c.run.device = d.parse().map_err(|e| format!("--device {e}"))?;
    }
    if let Some(d) = &o.data {
        c.run.data_dir = d.to_string_lossy().into_owned();
    }
    c.apply_overrides(&o.set)
        .map_err(|e| format!("{} with --set: {e}", path.display()))?;
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

/// `train --nproc-per-node N`: this process starts the ranks and waits for them; true when
/// they stopped for a preemption notice, after a checkpoint.
pub fn launch(config: &Path, nproc: usize, o: &Overrides) -> Result<bool, String> {
    if nproc == 0 {
        return Err("--nproc-per-node must be at least 1".into());
    }
    if std::env::var_os("WORLD_SIZE").is_some()
        || std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some()
    {
        return Err(
            "--nproc-per-node starts ranks itself: leave it out under torchrun, srun or mpirun"
                .into(),
        );
    }
    let c = load_config(config, o)?;
    let device = multigrid::train::parse_device(c.run.device).map_err(|e| e.to_string())?;
    let ended = super::spawn::spawn_ranks(
        nproc,
        device.is_cuda(),
        &super::spawn::args_without_nproc(),
        std::time::Duration::from_secs_f64(c.run.dist_timeout_s),
    )?;
    Ok(ended == super::spawn::Ended::Preempted)
}

pub fn train(
    config: &Path,
    out: &Path,
    resume: bool,
    init_from: Option<&Path>,
    overrides: &Overrides,
) -> Result<Summary, String> {
    let c = load_config(config, overrides)?;
    let classes = c.model.num_classes;
    // Before the trainer starts: a notice that comes while it loads is kept for the first step.
    multigrid::distributed::signals::install(&multigrid::distributed::signals::PREEMPTION)
        .map_err(|e| e.to_string())?;
    let mut t = Trainer::new(c, out).map_err(|e| format!("{e}"))?;
    let (rank, world) = (t.rank(), t.world_size());
    let err = |e| rank_error(rank, world, e);
    let primary = rank == 0;
    // A checkpoint of this run wins over --init-from, as TRAIN.AUTO_RESUME over
    // TRAIN.CHECKPOINT_FILE_PATH in PySlowFast: run.auto_resume (default), or --resume where a
    // config turns that off.
    let resumed = (resume || t.config().run.auto_resume) && t.resume().map_err(err)?;
    if resumed && primary {
        eprintln!("multigrid: resumed at step {}", t.next_step());
    }
    if let (false, Some(path)) = (resumed, init_from) {
        let r = t.init_from(path).map_err(err)?;
        if primary {
            for note in &r.notes {
                eprintln!("multigrid: {note}");
            }
            let head = match r.checkpoint_classes {
                Some(k) => format!(
                    "; {} re-initialised for {} classes (the checkpoint has {k})",
                    r.reinitialised.join(", "),
                    classes
                ),
                None => String::new(),
            };
            eprintln!(
                "multigrid: initialised {} tensors from {}{head}",
                r.loaded,
                path.display()
            );
        }
    }
    let total = t.plan().total_steps();
    if primary {
        let ranks = if world > 1 || t.backend() != "none" {
            format!(", {world} ranks ({})", t.backend())
        } else {
            String::new()
        };
        eprintln!(
            "multigrid: training {} steps on {:?} ({}{ranks}), writing {}",
            total - t.next_step(),
            t.device(),
            t.precision().name(),
            out.display()
        );
    }
    // Rank 0 alone draws; indicatif hides the bar when stderr is not a terminal.
    let bar = if primary && std::io::stderr().is_terminal() {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}")
            .map_err(|e| e.to_string())?
            .progress_chars("#>."),
    );
    bar.set_position(t.next_step());
    let summary = t
        .fit(&mut |p| {
            bar.set_position(p.step + 1);
            bar.set_message(format!(
                "epoch {} stage {} {}x{}x{}^2 loss {:.3} lr {:.2e}",
                p.epoch, p.stage, p.batch_size, p.num_frames, p.crop_size, p.loss, p.lr
            ));
            false
        })
        .map_err(err)?;
    bar.finish_and_clear();
    let fmt = |a: Option<multigrid::train::Accuracy>| {
        a.map_or("-".into(), |a| match a.map {
            Some(map) => format!("{:.1} / {:.1}, mAP {map:.1}", a.top1, a.top5),
            None => format!("{:.1} / {:.1}", a.top1, a.top5),
        })
    };
    if let (Some(signal), true) = (summary.preempted, primary) {
        eprintln!(
            "multigrid: {} received: stopped after step {} with a checkpoint; the same command \
             continues from it (run.auto_resume)",
            multigrid::distributed::signals::name(signal),
            summary.steps.saturating_sub(1)
        );
    }
    if primary {
        println!(
            "wall {:.1} s, {} steps, {} clips; val top-1/top-5 {}; test {}",
            summary.wall_seconds,
            summary.steps,
            summary.clips_seen,
            fmt(summary.final_val),
            fmt(summary.test)
        );
    }
    Ok(summary)
}

pub fn eval(
    config: &Path,
    checkpoint: &Path,
    split: &str,
    overrides: &Overrides,
) -> Result<(), String> {
    let c = load_config(config, overrides)?;
    let tmp = std::env::temp_dir().join(format!("multigrid-eval-{}", std::process::id()));
    let mut t = Trainer::new(c, &tmp).map_err(|e| e.to_string())?;
    let (rank, world) = (t.rank(), t.world_size());
    let err = |e| rank_error(rank, world, e);
    // Both collective: a rank that cannot read the checkpoint or open the split ends every
    // rank with its reason, rather than leaving them in the next collective.
    t.load_weights(checkpoint).map_err(err)?;
    let a = t.evaluate_named(split).map_err(err);
    let _ = std::fs::remove_dir_all(&tmp);
    let a = a?;
    if t.rank() > 0 {
        return Ok(());
    }
    let map = a.map.map_or(String::new(), |m| format!(" mAP {m:.2}"));
    println!(
        "{split}: top-1 {:.2} top-5 {:.2}{map} over {} clips",
        a.top1, a.top5, a.clips
    );
    Ok(())
}

/// Empties `out` before `demo` or `speedup` trains into it (a run directory left there would be
/// resumed). Only what those commands write is removed: the entries `own` names, each run
/// directory holding a `metrics.jsonl` or a `config.json`; anything else makes it an error naming the entry, so a
/// mistyped `--out` never deletes a user's files.
pub fn clear_own_output(out: &Path, own: impl Fn(&str) -> bool) -> Result<(), String> {
    let entries = match std::fs::read_dir(out) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", out.display())),
    };
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", out.display()))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // A run directory holds its metrics, or at least the config `compare` wrote first.
        let run = ["metrics.jsonl", "config.json"]
            .iter()
            .any(|f| path.join(f).exists());
        let ours = own(&name) && (!path.is_dir() || run);
        if !ours {
            return Err(format!(
                "{} holds {name}, which this command did not write: give --out an empty or new \
                 directory, or one of this command's earlier outputs",
                out.display()
            ));
        }
    }
    std::fs::remove_dir_all(out).map_err(|e| format!("cannot empty {}: {e}", out.display()))
}

/// An error's message, with the rank it happened on when there are several.
fn rank_error(rank: usize, world: usize, e: multigrid::Error) -> String {
    if world > 1 {
        format!("rank {rank} of {world}: {e}")
    } else {
        e.to_string()
    }
}

/// Loss and accuracy against wall-clock time for one or more runs, as an SVG chart.
pub fn plot(runs: &[PathBuf], out: &Path) -> Result<(), String> {
    let curves = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let name = run
                .file_name()
                .map_or("run".into(), |n| n.to_string_lossy().into_owned());
            super::chart::read(run, &name, i, 0)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let png = super::chart::draw(&curves, out)?;
    println!("plot: {} and {}", out.display(), png.display());
    Ok(())
}

/// Generates the synthetic set of `task` into `data` unless its three stores already hold
/// `clips` clips of that task's classes (an older, differently sized or other task's set is
/// replaced).
pub fn ensure_data(data: &Path, clips: u32, task: super::data::Task) -> Result<(), String> {
    let held: Option<usize> = ["train", "val", "test"]
        .iter()
        .map(|split| {
            multigrid::data::Dataset::store(data.join(format!("{split}.mgstore")))
                .ok()
                .map(|d| d.len())
        })
        .sum();
    let names: String = task
        .class_names()
        .iter()
        .map(|c| format!("{c}\n"))
        .collect();
    let same_task = std::fs::read_to_string(data.join("classes.txt")).is_ok_and(|t| t == names)
        && std::fs::read_to_string(data.join("generator.txt"))
            .is_ok_and(|t| t.trim_end() == task.generator());
    if held == Some(clips as usize) && same_task {
        return Ok(());
    }
    super::data::gen_data(&super::data::GenOptions {
        out: data.to_path_buf(),
        clips: clips.into(),
        frames: 32,
        size: 64,
        seed: 0,
        val_fraction: 0.1,
        store: true,
        // The benchmark reads the stores; MP4s only cost time there.
        videos: task == super::data::Task::Simple,
        fps: 30,
        task,
    })
}

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
pub fn compare(
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
pub fn demo(data: &Path, out: &Path, overrides: &Overrides) -> Result<(), String> {
    // Before the data, which takes minutes: a wrong --out fails at once.
    clear_own_output(out, |name| {
        ["baseline", "multigrid"].contains(&name) || name.starts_with("accuracy_vs_time.")
    })?;
    ensure_data(data, 3000, super::data::Task::Simple)?;
    compare(DEMO_CONFIGS, data, out, overrides).map(drop)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_commands_own_outputs_are_cleared() {
        let out = std::env::temp_dir().join(format!("mg-own-output-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let own = |name: &str| name == "baseline" || name == "chart.svg";
        // Missing: nothing to do.
        super::clear_own_output(&out, own).unwrap();
        std::fs::create_dir_all(out.join("baseline")).unwrap();
        std::fs::write(out.join("baseline/metrics.jsonl"), "").unwrap();
        std::fs::write(out.join("chart.svg"), "").unwrap();
        super::clear_own_output(&out, own).unwrap();
        assert!(!out.exists());
        // A directory of the right name without a run in it is not ours.
        std::fs::create_dir_all(out.join("baseline")).unwrap();
        std::fs::write(out.join("baseline/notes.txt"), "mine").unwrap();
        let e = super::clear_own_output(&out, own).unwrap_err();
        assert!(e.contains("holds baseline"), "{e}");
        assert!(out.join("baseline/notes.txt").exists());
        std::fs::remove_dir_all(&out).unwrap();
    }
}
