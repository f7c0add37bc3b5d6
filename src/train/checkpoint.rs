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
    /// Epochs completed, when the checkpoint lies on an epoch boundary (none mid-epoch): what
    /// PySlowFast's `epoch` field holds, plus one. Absent in checkpoints from before `.pyth`
    /// export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_epochs: Option<u32>,
    /// The file a checkpoint was imported from (a PySlowFast `.pyth`). Its `step` is no
    /// position in a plan of ours: a resume starts at the first step of epoch
    /// `completed_epochs` of the resuming run's plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
    /// CRC32 of every other file of the checkpoint, by name, checked before a resume reads
    /// them. Empty in checkpoints from before it was recorded (nothing to check then).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub checksums: std::collections::BTreeMap<String, u32>,
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
    // Every file synced and checksummed, then the manifest that lists them, then the
    // directory; after the rename, its parent: a crash leaves the old checkpoint or the new
    // one whole, and a file damaged later is found by its checksum.
    let mut manifest = manifest.clone();
    let mut names: Vec<String> = std::fs::read_dir(&tmp)
        .map_err(io(&tmp))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    for name in names {
        let path = tmp.join(&name);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        sync_file(&path)?;
        manifest.checksums.insert(name, crc32fast::hash(&bytes));
    }
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let manifest_path = tmp.join("manifest.json");
    std::fs::write(&manifest_path, text).map_err(io(&tmp))?;
    sync_file(&manifest_path)?;
    sync_file(&tmp)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    sync_file(root)?;
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

/// fsync of a file or a directory.
fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

/// The manifest of `dir`, after checking every file it lists against its CRC32: a truncated
/// or damaged file is an error naming it.
pub fn verify(dir: &Path) -> Result<Manifest> {
    let m = read_manifest(dir)?;
    for (name, want) in &m.checksums {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        if crc32fast::hash(&bytes) != *want {
            return Err(Error::Decode {
                path,
                reason: "checkpoint file fails its checksum (truncated or damaged)".into(),
            });
        }
    }
    Ok(m)
}

pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|e| Error::Decode {
        path,
        reason: format!("bad checkpoint manifest: {e}"),
    })
}

/// A checkpoint directory (one holding manifest.json), or a run directory whose newest
/// checkpoint under `checkpoints/` is meant.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join("manifest.json").is_file() {
        return Ok(path.to_path_buf());
    }
    if let Some((_, dir)) = list(&path.join("checkpoints"))?.pop() {
        return Ok(dir);
    }
    Err(Error::InvalidArgument(format!(
        "{} is neither a checkpoint directory (no manifest.json) nor a run directory with \
         checkpoints under checkpoints/",
        path.display()
    )))
}

// ---- PySlowFast's .pyth ---------------------------------------------------------------------
//
// A `.pyth` is a pickle (torch.save of {epoch, model_state, optimizer_state, cfg}), which only
// Python reads and writes faithfully; scripts/pyth.py, embedded here, does the pickling and
// exchanges plain safetensors files with us.

const PYTH_SCRIPT: &str = include_str!("../../scripts/pyth.py");

/// The Python that runs the `.pyth` conversion: `$MG_PYTHON`, else `python3`. It needs torch.
pub fn python() -> PathBuf {
    std::env::var_os("MG_PYTHON")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

fn run_pyth(args: &[&std::ffi::OsStr]) -> Result<String> {
    let py = python();
    let needs = "reading or writing a PySlowFast .pyth needs Python with torch: set MG_PYTHON \
                 to one (the set-up's .venv/bin/python has it)";
    let out = std::process::Command::new(&py)
        .arg("-c")
        .arg(PYTH_SCRIPT)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::Unsupported(format!("cannot run {}: {e}; {needs}", py.display())))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .trim_start_matches("pyth.py: ")
        .to_string();
    match out.status.code() {
        Some(0) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Some(3) => Err(Error::Unsupported(format!("{message}; {needs}"))),
        _ if message.is_empty() => Err(Error::Internal(format!(
            "{} ended with {} and no message while converting a .pyth",
            py.display(),
            out.status
        ))),
        _ => Err(Error::InvalidArgument(message)),
    }
}

/// What an import found besides the tensors.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PythImport {
    /// PySlowFast's `epoch`: the last epoch completed (start epoch minus one); None when the
    /// file has none.
    pub epoch: Option<i64>,
    /// Tensors imported into model.safetensors.
    pub tensors: usize,
    /// Parameters whose SGD momentum was imported.
    pub momentum: usize,
    /// Conversions made and state left behind, one sentence each.
    pub notes: Vec<String>,
}

impl PythImport {
    /// Epochs the checkpoint had completed.
    pub fn completed_epochs(&self) -> u32 {
        self.epoch
            .map_or(0, |e| (e + 1).clamp(0, i64::from(u32::MAX)) as u32)
    }
}

/// The script takes paths in JSON, which holds UTF-8 only.
fn utf8(p: &Path) -> Result<&str> {
    p.to_str().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{}: .pyth conversion needs UTF-8 paths",
            p.display()
        ))
    })
}

fn remove_on_error<T>(dir: &Path, r: Result<T>) -> Result<T> {
    if r.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    r
}

/// Converts `src` into model.safetensors and optimizer.safetensors in `dir` (which must exist),
/// without checking the tensors against any model. `trust_pickle` lets torch.load run the
/// code a pickle holds, for files with Python objects beyond tensors and plain values.
pub fn convert_pyth(src: &Path, dir: &Path, trust_pickle: bool) -> Result<PythImport> {
    convert("import", src, dir, trust_pickle)
}

/// scripts/pyth.py `mode SRC TO [--trust-pickle]`, and the summary it prints.
fn convert(mode: &str, src: &Path, to: &Path, trust_pickle: bool) -> Result<PythImport> {
    if !src.is_file() {
        return Err(Error::InvalidArgument(format!(
            "{}: no such checkpoint file",
            src.display()
        )));
    }
    let mut args = vec![std::ffi::OsStr::new(mode), src.as_os_str(), to.as_os_str()];
    if trust_pickle {
        args.push(std::ffi::OsStr::new("--trust-pickle"));
    }
    let stdout = run_pyth(&args)?;
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).map_err(|e| {
        Error::Internal(format!(
            "scripts/pyth.py printed {last:?} rather than its summary: {e}"
        ))
    })
}

/// Converts PySlowFast's Caffe2 checkpoint `src` (CHECKPOINT_TYPE caffe2: a pickled dict of
/// numpy arrays, under `blobs` or at the top) into the safetensors file `out`, the blob names
/// unchanged (`pretrained::caffe2_name` maps them). The pickle may hold only arrays and plain
/// containers unless `trust_pickle`, which runs the code it stores.
pub fn convert_caffe2(src: &Path, out: &Path, trust_pickle: bool) -> Result<PythImport> {
    convert("caffe2", src, out, trust_pickle)
}

/// Names and shapes of `file` against the model `model` builds: every tensor present with
/// its shape, nothing extra. The error names the tensors that differ.
pub fn check_weights(file: &Path, model: &crate::schedule::ModelConfig) -> Result<()> {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    crate::model::Network::new(&vs.root(), model)?;
    let ours: std::collections::BTreeMap<String, Vec<i64>> = vs
        .variables()
        .into_iter()
        .map(|(k, t)| (k, t.size()))
        .collect();
    let theirs: std::collections::BTreeMap<String, Vec<i64>> = tch::Tensor::read_safetensors(file)
        .map_err(|e| Error::Decode {
            path: file.to_path_buf(),
            reason: e.to_string(),
        })?
        .into_iter()
        .map(|(k, t)| (k, t.size()))
        .collect();
    let mut problems = Vec::new();
    for (name, shape) in &ours {
        match theirs.get(name) {
            None => problems.push(format!("{name} {shape:?} is missing")),
            Some(s) if s != shape => {
                problems.push(format!("{name} is {s:?}, the model's is {shape:?}"))
            }
            Some(_) => {}
        }
    }
    for name in theirs.keys().filter(|k| !ours.contains_key(*k)) {
        problems.push(format!("{name} is not in the model"));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let n = problems.len();
    problems.truncate(6);
    Err(Error::InvalidArgument(format!(
        "the checkpoint does not fit the config's model (model.depth {}, width_per_group {}, \
         num_classes {}): {}{}",
        model.depth,
        model.width_per_group,
        model.num_classes,
        problems.join("; "),
        if n > 6 {
            format!("; and {} more", n - 6)
        } else {
            String::new()
        }
    )))
}

/// Imports a PySlowFast checkpoint as one of ours into `out_dir` (absent or empty), written
/// in a sibling temporary directory renamed into place. The weights must fit `config`'s
/// model exactly; `config` goes into the manifest, which resumes at the first step of the
/// epoch after the checkpoint's `epoch`.
pub fn import_pyth(
    src: &Path,
    out_dir: &Path,
    config: &Config,
    trust_pickle: bool,
) -> Result<PythImport> {
    if out_dir.exists() {
        let empty = std::fs::read_dir(out_dir)
            .map_err(io(out_dir))?
            .next()
            .is_none();
        if !empty {
            return Err(Error::InvalidArgument(format!(
                "{} exists and is not empty: import into a new directory",
                out_dir.display()
            )));
        }
    }
    let name = out_dir
        .file_name()
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} names no directory to import into",
                out_dir.display()
            ))
        })?
        .to_string_lossy()
        .into_owned();
    let parent = out_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = parent.join(format!(".{name}.tmp-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let done = (|| {
        let found = convert_pyth(src, &tmp, trust_pickle)?;
        check_weights(&tmp.join("model.safetensors"), &config.model)
            .map_err(|e| Error::InvalidArgument(format!("{}: {e}", src.display())))?;
        let completed = found.completed_epochs();
        let manifest = Manifest {
            step: 0,
            epoch: completed,
            wall_seconds: 0.0,
            clips_seen: 0,
            model: "model.safetensors".into(),
            optimizer: "optimizer.safetensors".into(),
            seed: config.run.seed,
            world_size: 1,
            config: config.clone(),
            completed_epochs: Some(completed),
            imported_from: Some(src.display().to_string()),
            checksums: Default::default(),
        };
        let text =
            serde_json::to_string_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(tmp.join("manifest.json"), text).map_err(io(&tmp))?;
        if out_dir.exists() {
            std::fs::remove_dir(out_dir).map_err(io(out_dir))?;
        }
        std::fs::rename(&tmp, out_dir).map_err(io(out_dir))?;
        Ok(found)
    })();
    remove_on_error(&tmp, done)
}

/// What an export wrote.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PythExport {
    /// model_state entries (num_batches_tracked included).
    pub tensors: usize,
    /// Parameters whose momentum went into optimizer_state.
    pub momentum: usize,
    /// The `epoch` field: epochs completed minus one.
    pub epoch: i64,
    /// The file written: `out` itself when it names a `.pyth`, else PySlowFast's own name in
    /// the output directory `out` (checkpoints/checkpoint_epoch_NNNNN.pyth).
    #[serde(skip)]
    pub path: PathBuf,
    /// The BN.NORM_TYPE whose optimizer layout optimizer_state follows (see [`export_pyth`]).
    #[serde(skip)]
    pub norm_type: String,
    /// Anything PySlowFast will see differently, one sentence each.
    #[serde(skip)]
    pub notes: Vec<String>,
}

/// PySlowFast's file for a checkpoint with `completed` epochs under its OUTPUT_DIR `dir`:
/// `checkpoints/checkpoint_epoch_NNNNN.pyth` (`save_checkpoint` numbers it epoch + 1, which
/// is the epoch a resume starts at and the name its long-cycle reload asserts).
pub fn pyth_path(dir: &Path, completed: u32) -> PathBuf {
    dir.join("checkpoints")
        .join(format!("checkpoint_epoch_{completed:05}.pyth"))
}

/// The BN.NORM_TYPE of the model PySlowFast builds for (0-based) `epoch` of a run of config
/// `c` on `world_size` GPUs, which fixes its optimizer's parameter groups: `sub_batchnorm`
/// keeps the BN scale and shift in SubBatchNorm3d, which is no `_NormBase`, so
/// construct_optimizer puts every parameter in one group; `batchnorm` and `sync_batchnorm`
/// have two (BN parameters, the rest). With the long cycle, multigrid's update_long_cycle
/// rule for the stage training `epoch` (f = batch per GPU / BN_BASE_SIZE: sub-batch BN above
/// 1, sync BN below); without it, the BN.NORM_TYPE [`pyslowfast_cfg`] writes.
pub fn pyslowfast_norm_type(c: &Config, world_size: u32, epoch: u32) -> &'static str {
    let Ok(s) = crate::schedule::Schedule::new(c.clone()) else {
        return "batchnorm";
    };
    let world = world_size.max(1);
    let base = f64::from(c.multigrid.bn_base_size.max(1));
    if c.multigrid.long_cycle {
        let stage = s.stages()[s.stage_index_at(epoch)];
        let per_gpu =
            f64::from(stage.batch_factor) * f64::from(c.train.batch_size) / f64::from(world);
        let f = per_gpu / base;
        return if f > 1.0 {
            "sub_batchnorm"
        } else if f < 1.0 {
            "sync_batchnorm"
        } else {
            "batchnorm"
        };
    }
    match pyslowfast_cfg(c, world)["BN"]["NORM_TYPE"].as_str() {
        Some("sub_batchnorm") => "sub_batchnorm",
        Some("sync_batchnorm") => "sync_batchnorm",
        _ => "batchnorm",
    }
}

/// Our config under PySlowFast's key names (the base config: PySlowFast's multigrid rewrites
/// its solver and shape keys per stage at run time), from the table that also reads
/// PySlowFast's YAML configs.
pub fn pyslowfast_cfg(c: &Config, world_size: u32) -> serde_json::Value {
    crate::schedule::pyslowfast::to_pyslowfast(c, world_size)
}

/// Writes checkpoint `ckpt` (a checkpoint directory, or a run directory for its newest) as a
/// PySlowFast `.pyth`, through a temporary file renamed into place: at `out` when it names a
/// `.pyth` file, else under PySlowFast's name in the OUTPUT_DIR `out`
/// ([`pyth_path`], where its AUTO_RESUME finds it). model_state by PySlowFast's names in its
/// module order with num_batches_tracked for every BN; optimizer_state as torch.optim.SGD's
/// state_dict in the parameter groups construct_optimizer makes for the model PySlowFast
/// builds at the epoch the resume starts at ([`pyslowfast_norm_type`]: one group under
/// sub-batch BN, else BN parameters then the others), so that its optimizer.load_state_dict
/// takes it; `epoch` (epochs completed minus one), `cfg` as YAML, and scaler_state with fp16.
pub fn export_pyth(ckpt: &Path, out: &Path) -> Result<PythExport> {
    let dir = resolve(ckpt)?;
    let m = read_manifest(&dir)?;
    let mut notes = Vec::new();
    let completed = match m.completed_epochs {
        Some(e) => e,
        None => {
            notes.push(format!(
                "the checkpoint does not say that it lies on an epoch boundary (step {}, in \
                 epoch {}): PySlowFast will resume at the start of epoch {}",
                m.step, m.epoch, m.epoch
            ));
            m.epoch
        }
    };
    let out = &if out.extension().is_some_and(|e| e == "pyth") {
        out.to_path_buf()
    } else {
        pyth_path(out, completed)
    };
    let world = m.world_size.max(1);
    let max_epoch = crate::schedule::Schedule::new(m.config.clone()).map_or(1, |s| s.max_epoch());
    let resume_epoch = completed.min(max_epoch.saturating_sub(1));
    let norm_type = pyslowfast_norm_type(&m.config, world, resume_epoch);
    let first = pyslowfast_norm_type(&m.config, world, 0);
    if m.config.multigrid.long_cycle && (first == "sub_batchnorm") != (norm_type == "sub_batchnorm")
    {
        notes.push(format!(
            "optimizer_state has the parameter groups of epoch {resume_epoch}'s {norm_type} \
             model; PySlowFast's train_net first loads a checkpoint into epoch 0's {first} \
             model, whose optimizer has {} group(s), and fails there as it does on its own \
             checkpoints at a long-cycle change (facebookresearch/SlowFast#478)",
            if first == "sub_batchnorm" { 1 } else { 2 }
        ));
    }
    let lr = crate::schedule::Schedule::new(m.config.clone())
        .and_then(|s| s.lr_at(f64::from(completed.min(s.max_epoch().saturating_sub(1)))))
        .unwrap_or(m.config.solver.base_lr);
    let optimizer = dir.join(&m.optimizer);
    let scaler = super::amp::LossScaler::default();
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let model = dir.join(&m.model);
    let job = serde_json::json!({
        "model": utf8(&model)?,
        "optimizer": if optimizer.is_file() { Some(utf8(&optimizer)?) } else { None },
        "out": utf8(out)?,
        "epoch": i64::from(completed) - 1,
        "num_batches_tracked": m.step,
        "norm_type": norm_type,
        "cfg": pyslowfast_cfg(&m.config, m.world_size),
        "solver": {
            "lr": lr,
            "momentum": m.config.solver.momentum,
            "dampening": m.config.solver.dampening,
            "weight_decay": m.config.solver.weight_decay,
            "bn_weight_decay": 0.0,
            "nesterov": m.config.solver.nesterov,
        },
        "scaler": {
            "growth_factor": scaler.growth_factor,
            "backoff_factor": scaler.backoff_factor,
            "growth_interval": scaler.growth_interval,
        },
    });
    let job_path = std::env::temp_dir().join(format!(
        "multigrid-export-{}-{}.json",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::write(&job_path, job.to_string()).map_err(io(&job_path))?;
    let ran = run_pyth(&[std::ffi::OsStr::new("export"), job_path.as_os_str()]);
    let _ = std::fs::remove_file(&job_path);
    let stdout = ran?;
    let last = stdout.lines().last().unwrap_or("");
    let mut done: PythExport = serde_json::from_str(last).map_err(|e| {
        Error::Internal(format!(
            "scripts/pyth.py printed {last:?} rather than its summary: {e}"
        ))
    })?;
    done.notes = notes;
    done.path = out.clone();
    done.norm_type = norm_type.to_string();
    Ok(done)
}

/// What [`Trainer::init_from`] loaded (the C API's report is this as JSON).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct InitReport {
    /// The weights file read (for a `.pyth`, the file itself).
    pub source: PathBuf,
    /// Tensors copied from it.
    pub loaded: usize,
    /// Tensors re-initialised instead (the classifier when the class count differs).
    pub reinitialised: Vec<String>,
    /// The checkpoint's class count when it differs from the model's.
    pub checkpoint_classes: Option<i64>,
    /// What the conversion did (`.pyth`, Caffe2 names, a 2D ResNet's), one sentence each.
    pub notes: Vec<String>,
    /// 2D kernels inflated to 3D (a 2D ImageNet ResNet's).
    pub inflated: usize,
    /// With [`InitOptions::skip_missing`]: the model's tensors that kept their initial values,
    /// each with why (not in the checkpoint, or of another shape there).
    pub skipped: Vec<String>,
    /// With [`InitOptions::skip_missing`]: the checkpoint's tensors loaded nowhere, each with
    /// why (not in the model, or mapping to nothing of it).
    pub unused: Vec<String>,
}

/// How [`Trainer::init_from_with`] treats what does not map.
#[derive(Debug, Clone, Copy, Default)]
pub struct InitOptions {
    /// Load what maps and list the rest ([`InitReport::skipped`], [`InitReport::unused`]), as
    /// PySlowFast's loader does (its "Not loaded" and "can not be converted" lines), rather
    /// than fail naming it: for a 2D ImageNet ResNet, whose weights cover only the slow
    /// pathway.
    pub skip_missing: bool,
}
