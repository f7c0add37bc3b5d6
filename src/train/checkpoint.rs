//! Checkpoints: parameters and BN buffers in safetensors with PySlowFast's names, optimizer
//! momentum by parameter name, and a JSON manifest (plan position, counters, config). Each is
//! written into a temporary directory renamed into place; the last N are kept.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::schedule::Config;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The next global step to run.
    pub step: u64,
    pub epoch: u32,
    pub wall_seconds: f64,
    pub clips_seen: u64,
    pub model: String,
    pub optimizer: String,
    /// Dropout and augmentation are reseeded from (seed, step) at every step, so the seed and
    /// the step are the whole random state.
    pub seed: u64,
    /// Ranks that trained it; checkpoints from before distributed training had one.
    #[serde(default = "one")]
    pub world_size: u32,
    pub config: Config,
}

fn one() -> u32 {
    1
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn dir_name(step: u64) -> String {
    format!("step_{step:09}")
}

/// Writes `write` into `root/step_N` atomically and keeps the newest `keep` checkpoints.
pub fn save(
    root: &Path,
    manifest: &Manifest,
    keep: usize,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(io(root))?;
    let final_dir = root.join(dir_name(manifest.step));
    let tmp = root.join(format!(
        ".tmp-{}-{}",
        dir_name(manifest.step),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    write(&tmp)?;
    let text = serde_json::to_string_pretty(manifest)
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    std::fs::write(tmp.join("manifest.json"), text).map_err(io(&tmp))?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    let mut all = list(root)?;
    while all.len() > keep.max(1) {
        let (_, old) = all.remove(0);
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(final_dir)
}

/// Finished checkpoints under `root`, oldest first.
pub fn list(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(v);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(step) = name
            .strip_prefix("step_")
            .and_then(|s| s.parse::<u64>().ok())
        {
            if e.path().join("manifest.json").exists() {
                v.push((step, e.path()));
            }
        }
    }
    // By progress, not by step number: step numbers depend on the world size, so after a
    // resume on another number of ranks a newer checkpoint can have a smaller step.
    v.sort_by_cached_key(|(step, dir)| (read_manifest(dir).map_or(0, |m| m.clips_seen), *step));
    Ok(v)
}

pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|e| Error::Decode {
        path,
        reason: format!("bad checkpoint manifest: {e}"),
    })
}
