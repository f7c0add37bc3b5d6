//! `multigrid train`: one run, or with `--nproc-per-node` its ranks; and the config with the
//! command line's overrides, which `eval`, `demo`, `checkpoint` and the benchmarks load too.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;

use multigrid::distributed::environment::Launch;
use multigrid::train::{Summary, Trainer};
use multigrid::Config;

use crate::{Outcome, Overrides};

/// The config at `path` with `o` applied, checked.
pub fn load_config(path: &Path, o: &Overrides) -> Result<Config, String> {
    load(path, o).map(|(c, _)| c)
}

/// Whether `path` names a PySlowFast YAML config rather than one of ours (JSON).
fn is_yaml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// [`load_config`], and for a PySlowFast YAML the checkpoint it fine-tunes from
/// (TRAIN.CHECKPOINT_FILE_PATH). Its warnings go to stderr.
fn load(path: &Path, o: &Overrides) -> Result<(Config, Option<std::path::PathBuf>), String> {
    let (mut c, init_from) = if is_yaml(path) {
        use multigrid::schedule::pyslowfast;
        let opts = pyslowfast::opts_from_args(&o.opts).map_err(|e| e.to_string())?;
        let imported = pyslowfast::import(path, &opts).map_err(|e| e.to_string())?;
        for w in &imported.warnings {
            eprintln!("multigrid: warning: {w}");
        }
        (imported.config, imported.init_from)
    } else if let Some(first) = o.opts.first() {
        return Err(format!(
            "{first:?}: KEY VALUE options follow a PySlowFast YAML --config; for {} use \
             --set SECTION.KEY=VALUE",
            path.display()
        ));
    } else {
        (Config::from_file(path).map_err(|e| e.to_string())?, None)
    };
    if let Some(d) = &o.device {
        c.run.device = d.parse().map_err(|e| format!("--device {e}"))?;
    }
    if let Some(d) = &o.data {
        c.run.data_dir = d.to_string_lossy().into_owned();
    }
    c.apply_overrides(&o.set)
        .map_err(|e| format!("{} with --set: {e}", path.display()))?;
    c.validate().map_err(|e| e.to_string())?;
    Ok((c, init_from))
}

pub fn run(a: &crate::TrainArgs) -> Result<Outcome, String> {
    let o = &a.overrides;
    let preempted = match a.nproc_per_node {
        Some(n) => launch(&a.config, n, o)?,
        None => {
            let init_from = a.init_from.as_deref();
            let init = multigrid::train::checkpoint::InitOptions {
                skip_missing: a.init_skip_missing,
            };
            let s = train_with(&a.config, &a.output_dir, a.resume, init_from, init, o)?;
            s.preempted.is_some()
        }
    };
    Ok(if preempted {
        Outcome::Preempted
    } else {
        Outcome::Done
    })
}

/// `train --nproc-per-node N`: this process starts the ranks and waits for them; true when
/// they stopped for a preemption notice, after a checkpoint.
fn launch(config: &Path, nproc: usize, o: &Overrides) -> Result<bool, String> {
    if nproc == 0 {
        return Err("--nproc-per-node must be at least 1".into());
    }
    // The launchers the trainer itself would join (torchrun, mpirun, srun).
    if let Some(l) = Launch::from_env().map_err(|e| e.to_string())? {
        return Err(format!(
            "--nproc-per-node starts ranks itself: leave it out under torchrun, srun or mpirun \
             (this process runs under {})",
            l.launcher.name()
        ));
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
    let init = multigrid::train::checkpoint::InitOptions::default();
    train_with(config, out, resume, init_from, init, overrides)
}

/// [`train`] with the options of `--init-from`.
pub fn train_with(
    config: &Path,
    out: &Path,
    resume: bool,
    init_from: Option<&Path>,
    init: multigrid::train::checkpoint::InitOptions,
    overrides: &Overrides,
) -> Result<Summary, String> {
    let (c, yaml_init_from) = load(config, overrides)?;
    // The YAML's TRAIN.CHECKPOINT_FILE_PATH, unless --init-from names another.
    let init_from = init_from.or(yaml_init_from.as_deref());
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
        let r = t.init_from_with(path, init).map_err(err)?;
        if primary {
            for note in &r.notes {
                eprintln!("multigrid: {note}");
            }
            for s in &r.skipped {
                eprintln!("multigrid: not loaded (kept its initial values): {s}");
            }
            for s in &r.unused {
                eprintln!("multigrid: not loaded from the checkpoint: {s}");
            }
            if r.inflated > 0 {
                eprintln!("multigrid: inflated {} 2D kernels to 3D", r.inflated);
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

/// An error's message, with the rank it happened on when there are several.
pub fn rank_error(rank: usize, world: usize, e: multigrid::Error) -> String {
    if world > 1 {
        format!("rank {rank} of {world}: {e}")
    } else {
        e.to_string()
    }
}
