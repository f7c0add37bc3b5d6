//! `multigrid eval`: a checkpoint's accuracy on the val or test split.

use multigrid::train::Trainer;

use crate::train::{load_config, rank_error};

/// Evaluates `--checkpoint` on `--split` (the trainer's `evaluate_named`: val at the base
/// shape, test with the configured K x C views) on every rank; rank 0 prints the result.
pub fn run(a: &crate::EvalArgs) -> Result<(), String> {
    let (checkpoint, split) = (&a.checkpoint, a.split.as_str());
    let c = load_config(&a.config, &a.overrides)?;
    let tmp = std::env::temp_dir().join(format!("multigrid-eval-{}", std::process::id()));
    let mut t = Trainer::new(c, &tmp).map_err(|e| e.to_string())?;
    let (rank, world) = (t.rank(), t.world_size());
    let err = |e| rank_error(rank, world, e);
    // Both collective: a rank that cannot read the checkpoint or open the split ends every
    // rank with its reason, rather than leaving them in the next collective.
    t.load_weights(checkpoint).map_err(err)?;
    let acc = t.evaluate_named(split).map_err(err);
    let _ = std::fs::remove_dir_all(&tmp);
    let acc = acc?;
    if t.rank() > 0 {
        return Ok(());
    }
    let map = acc.map.map_or(String::new(), |m| format!(" mAP {m:.2}"));
    println!(
        "{split}: top-1 {:.2} top-5 {:.2}{map} over {} clips",
        acc.top1, acc.top5, acc.clips
    );
    Ok(())
}
