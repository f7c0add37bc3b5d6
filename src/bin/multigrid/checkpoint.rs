//! `multigrid checkpoint import|export`: PySlowFast `.pyth` checkpoints to and from ours.

use std::path::Path;

use multigrid::train::checkpoint;

/// `checkpoint import IN.pyth OUT_DIR --config CFG.json`.
pub fn import(src: &Path, out: &Path, config: &Path, trust_pickle: bool) -> Result<(), String> {
    let c = super::train::load_config(config, &super::train::Overrides::default())?;
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

/// `checkpoint export CKPT_DIR OUT.pyth`.
pub fn export(ckpt: &Path, out: &Path) -> Result<(), String> {
    let done = checkpoint::export_pyth(ckpt, out).map_err(|e| e.to_string())?;
    for note in &done.notes {
        eprintln!("multigrid: {note}");
    }
    println!(
        "wrote {}: {} model_state tensors, momentum of {} parameters, epoch {}",
        out.display(),
        done.tensors,
        done.momentum,
        done.epoch
    );
    Ok(())
}
