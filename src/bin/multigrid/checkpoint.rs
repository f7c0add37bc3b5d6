//! `multigrid checkpoint import|export`: PySlowFast `.pyth` checkpoints to and from ours.

use std::path::Path;

use multigrid::train::checkpoint;

use crate::train::load_config;
use crate::{CheckpointCommand, Overrides};

pub fn run(c: &CheckpointCommand) -> Result<(), String> {
    match c {
        CheckpointCommand::Import(a) => import(&a.input, &a.out_dir, &a.config, a.trust_pickle),
        CheckpointCommand::Export(a) => export(&a.ckpt_dir, &a.output),
    }
}

/// `checkpoint import IN.pyth OUT_DIR --config CFG.json`.
fn import(src: &Path, out: &Path, config: &Path, trust_pickle: bool) -> Result<(), String> {
    let c = load_config(config, &Overrides::default())?;
    let found = checkpoint::import_pyth(src, out, &c, trust_pickle).map_err(|e| e.to_string())?;
    for note in &found.notes {
        eprintln!("multigrid: {note}");
    }
    let completed = found.completed_epochs();
    println!(
        "imported {} tensors and the momentum of {} parameters from {} into {}; {} epoch{} \
         completed (a resume starts at epoch {completed})",
        found.tensors,
        found.momentum,
        src.display(),
        out.display(),
        completed,
        if completed == 1 { "" } else { "s" }
    );
    Ok(())
}

/// `checkpoint export CKPT_DIR OUT.pyth|OUTPUT_DIR`.
fn export(ckpt: &Path, out: &Path) -> Result<(), String> {
    let done = checkpoint::export_pyth(ckpt, out).map_err(|e| e.to_string())?;
    for note in &done.notes {
        eprintln!("multigrid: {note}");
    }
    println!(
        "wrote {}: {} model_state tensors, momentum of {} parameters in the optimizer layout \
         of PySlowFast's {} model, epoch {}",
        done.path.display(),
        done.tensors,
        done.momentum,
        done.norm_type,
        done.epoch
    );
    Ok(())
}
