//! PySlowFast's config keys and ours, both ways, from one table ([`KEYS`]):
//! [`PySlowFastCfg::to_config`] reads a PySlowFast config as ours, and [`to_pyslowfast`] writes
//! ours under PySlowFast's names (the `cfg` of an exported checkpoint).
//!
//! Every PySlowFast key is mapped onto ours, worked out from others (batch and world size, BN,
//! precision), ignored with a warning (it changes nothing we compute: TensorBoard, pinned
//! memory), unused (it has no effect given the accepted values, as the non-local settings
//! without non-local blocks), or held to what our SlowFast implements (MODEL.ARCH slowfast).
//! Any other key must keep PySlowFast's default: a value that would change what PySlowFast
//! computes, and that we do not implement, is an error naming the key.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::load::{defaults, same, PySlowFastCfg};
use crate::error::{config_err, Error, Result};
use crate::schedule::{Config, PrecisionChoice};

/// What becomes of one PySlowFast key.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// The same value under our key (`section.key`), both ways.
    Same(&'static str),
    /// Read and written by code ([`PySlowFastCfg::to_config`], [`to_pyslowfast`]).
    Derived,
    /// Changes nothing we compute: a warning when it differs from PySlowFast's default.
    Ignored,
    /// Has no effect given what the other keys may hold (or PySlowFast never reads it).
    Unused,
    /// Must hold what our SlowFast implements (checked when it differs from the default).
    Fixed(Fixed),
}

use Rule::*;

/// The PySlowFast keys we map, work out, ignore or hold fixed; PySlowFast's order.
const KEYS: &[(&str, Rule)] = &[
    ("TRAIN.ENABLE", Ignored),
    ("TRAIN.KILL_LOSS_EXPLOSION_FACTOR", Ignored),
    ("TRAIN.DATASET", Same("train.dataset")),
    ("TRAIN.BATCH_SIZE", Derived),
    ("TRAIN.EVAL_PERIOD", Same("train.eval_period")),
    ("TRAIN.CHECKPOINT_PERIOD", Same("train.checkpoint_period")),
    ("TRAIN.AUTO_RESUME", Same("run.auto_resume")),
    ("TRAIN.CHECKPOINT_FILE_PATH", Derived),
    ("TRAIN.CHECKPOINT_TYPE", Derived),
    ("TRAIN.MIXED_PRECISION", Derived),
    ("TEST.ENABLE", Ignored),
    ("TEST.DATASET", Derived),
    ("TEST.BATCH_SIZE", Derived),
    ("TEST.CHECKPOINT_FILE_PATH", Ignored),
    (
        "TEST.NUM_ENSEMBLE_VIEWS",
        Same("run.test_num_temporal_views"),
    ),
    ("TEST.NUM_SPATIAL_CROPS", Same("run.test_num_spatial_crops")),
    ("TEST.CHECKPOINT_TYPE", Ignored),
    ("TEST.SAVE_RESULTS_PATH", Ignored),
    ("RESNET.TRANS_FUNC", Fixed(Fixed::TransFunc)),
    ("RESNET.WIDTH_PER_GROUP", Same("model.width_per_group")),
    ("RESNET.INPLACE_RELU", Ignored),
    (
        "RESNET.ZERO_INIT_FINAL_BN",
        Same("model.zero_init_final_bn"),
    ),
    ("RESNET.DEPTH", Same("model.depth")),
    (
        "RESNET.NUM_BLOCK_TEMP_KERNEL",
        Fixed(Fixed::TemporalKernels),
    ),
    ("RESNET.SPATIAL_STRIDES", Fixed(Fixed::SpatialStrides)),
    ("RESNET.SPATIAL_DILATIONS", Fixed(Fixed::Dilations)),
    ("NONLOCAL.LOCATION", Fixed(Fixed::NonLocal)),
    ("NONLOCAL.GROUP", Unused),
    ("NONLOCAL.INSTANTIATION", Unused),
    ("NONLOCAL.POOL", Unused),
    ("MODEL.ARCH", Fixed(Fixed::Arch)),
    ("MODEL.MODEL_NAME", Fixed(Fixed::ModelName)),
    ("MODEL.NUM_CLASSES", Same("model.num_classes")),
    ("MODEL.LOSS_FUNC", Same("model.loss_func")),
    ("MODEL.SINGLE_PATHWAY_ARCH", Unused),
    ("MODEL.MULTI_PATHWAY_ARCH", Unused),
    ("MODEL.DROPOUT_RATE", Same("model.dropout_rate")),
    ("MODEL.HEAD_ACT", Same("model.head_act")),
    ("MODEL.ACT_CHECKPOINT", Ignored),
    ("MODEL.FP16_ALLREDUCE", Ignored),
    ("SLOWFAST.BETA_INV", Same("model.beta_inv")),
    ("SLOWFAST.ALPHA", Same("model.alpha")),
    (
        "SLOWFAST.FUSION_CONV_CHANNEL_RATIO",
        Same("model.fusion_conv_channel_ratio"),
    ),
    ("SLOWFAST.FUSION_KERNEL_SZ", Same("model.fusion_kernel_sz")),
    ("DATA.PATH_TO_DATA_DIR", Same("run.data_dir")),
    ("DATA.PATH_PREFIX", Same("data.path_prefix")),
    ("DATA.NUM_FRAMES", Same("data.num_frames")),
    ("DATA.SAMPLING_RATE", Same("data.sampling_rate")),
    ("DATA.MEAN", Same("data.mean")),
    ("DATA.INPUT_CHANNEL_NUM", Fixed(Fixed::InputChannels)),
    ("DATA.STD", Same("data.std")),
    ("DATA.TRAIN_JITTER_SCALES", Same("data.train_jitter_scales")),
    ("DATA.TRAIN_CROP_SIZE", Same("data.train_crop_size")),
    ("DATA.TEST_CROP_SIZE", Same("data.test_crop_size")),
    ("DATA.TARGET_FPS", Same("data.target_fps")),
    ("DATA.DECODING_BACKEND", Ignored),
    ("DATA.INV_UNIFORM_SAMPLE", Same("data.inv_uniform_sample")),
    ("DATA.RANDOM_FLIP", Same("data.random_flip")),
    ("DATA.MULTI_LABEL", Same("data.multi_label")),
    ("DATA.ENSEMBLE_METHOD", Same("data.ensemble_method")),
    (
        "DATA.REVERSE_INPUT_CHANNEL",
        Same("data.reverse_input_channel"),
    ),
    ("SOLVER.BASE_LR", Same("solver.base_lr")),
    ("SOLVER.LR_POLICY", Same("solver.lr_policy")),
    ("SOLVER.COSINE_END_LR", Same("solver.cosine_end_lr")),
    ("SOLVER.GAMMA", Same("solver.gamma")),
    ("SOLVER.STEP_SIZE", Unused),
    ("SOLVER.STEPS", Same("solver.steps")),
    ("SOLVER.LRS", Same("solver.lrs")),
    ("SOLVER.MAX_EPOCH", Same("solver.max_epoch")),
    ("SOLVER.MOMENTUM", Same("solver.momentum")),
    ("SOLVER.DAMPENING", Same("solver.dampening")),
    ("SOLVER.NESTEROV", Same("solver.nesterov")),
    ("SOLVER.WEIGHT_DECAY", Same("solver.weight_decay")),
    ("SOLVER.WARMUP_FACTOR", Unused),
    ("SOLVER.WARMUP_EPOCHS", Same("solver.warmup_epochs")),
    ("SOLVER.WARMUP_START_LR", Same("solver.warmup_start_lr")),
    ("SOLVER.OPTIMIZING_METHOD", Fixed(Fixed::Sgd)),
    // Applied when the config is read (assert_and_infer_cfg), as PySlowFast does.
    ("SOLVER.BASE_LR_SCALE_NUM_SHARDS", Unused),
    (
        "SOLVER.COSINE_AFTER_WARMUP",
        Same("solver.cosine_after_warmup"),
    ),
    ("SOLVER.BETAS", Unused),
    ("BN.USE_PRECISE_STATS", Same("run.precise_bn")),
    ("BN.NUM_BATCHES_PRECISE", Same("run.precise_bn_batches")),
    ("BN.WEIGHT_DECAY", Fixed(Fixed::BnWeightDecay)),
    ("BN.NORM_TYPE", Derived),
    ("BN.NUM_SPLITS", Derived),
    ("BN.NUM_SYNC_DEVICES", Derived),
    ("BN.GLOBAL_SYNC", Derived),
    ("NUM_GPUS", Derived),
    ("NUM_SHARDS", Derived),
    ("SHARD_ID", Ignored),
    ("OUTPUT_DIR", Derived),
    ("RNG_SEED", Same("run.seed")),
    ("LOG_PERIOD", Same("run.log_period")),
    ("LOG_MODEL_INFO", Ignored),
    ("DIST_BACKEND", Derived),
    ("DATA_LOADER.NUM_WORKERS", Same("run.num_workers")),
    ("DATA_LOADER.PIN_MEMORY", Ignored),
    ("DATA_LOADER.ENABLE_MULTI_THREAD_DECODE", Ignored),
    ("MULTIGRID.EPOCH_FACTOR", Same("multigrid.epoch_factor")),
    ("MULTIGRID.SHORT_CYCLE", Same("multigrid.short_cycle")),
    (
        "MULTIGRID.SHORT_CYCLE_FACTORS",
        Same("multigrid.short_cycle_factors"),
    ),
    ("MULTIGRID.LONG_CYCLE", Same("multigrid.long_cycle")),
    (
        "MULTIGRID.LONG_CYCLE_FACTORS",
        Same("multigrid.long_cycle_factors"),
    ),
    ("MULTIGRID.BN_BASE_SIZE", Derived),
    ("MULTIGRID.EVAL_FREQ", Same("multigrid.eval_freq")),
];

/// Sections that change nothing we compute, every key ignored with a warning.
const IGNORED_SECTIONS: &[&str] = &["TENSORBOARD.", "DEMO."];

fn rule(key: &str) -> Option<Rule> {
    KEYS.iter()
        .find(|(k, _)| *k == key)
        .map(|&(_, r)| r)
        .or_else(|| {
            IGNORED_SECTIONS
                .iter()
                .any(|s| key.starts_with(s))
                .then_some(Ignored)
        })
}

/// Keys held to what our SlowFast implements.
#[derive(Debug, Clone, Copy)]
enum Fixed {
    Arch,
    ModelName,
    TransFunc,
    /// PySlowFast gives a stage's temporal kernel to its first N blocks and 1 to the rest;
    /// ours gives it to every block.
    TemporalKernels,
    SpatialStrides,
    Dilations,
    NonLocal,
    InputChannels,
    Sgd,
    BnWeightDecay,
}

/// Residual blocks per stage (res2..res5) of our ResNet depths.
fn blocks(depth: u32) -> [u32; 4] {
    match depth {
        18 => [2, 2, 2, 2],
        101 => [3, 4, 23, 3],
        _ => [3, 4, 6, 3],
    }
}

impl Fixed {
    /// What our SlowFast implements, as PySlowFast writes it.
    fn ours(self, depth: u32) -> Value {
        match self {
            Fixed::Arch => json!("slowfast"),
            Fixed::ModelName => json!("SlowFast"),
            Fixed::TransFunc if depth == 18 => json!("basic_transform"),
            Fixed::TransFunc => json!("bottleneck_transform"),
            Fixed::TemporalKernels => json!(blocks(depth).map(|b| [b, b])),
            Fixed::SpatialStrides => json!([[1, 1], [2, 2], [2, 2], [2, 2]]),
            Fixed::Dilations => json!([[1, 1], [1, 1], [1, 1], [1, 1]]),
            Fixed::NonLocal => json!([[[], []], [[], []], [[], []], [[], []]]),
            Fixed::InputChannels => json!([3, 3]),
            Fixed::Sgd => json!("sgd"),
            Fixed::BnWeightDecay => json!(0.0),
        }
    }

    fn accepts(self, v: &Value, depth: u32) -> bool {
        match self {
            // Any count at least the stage's blocks gives every block the kernel.
            Fixed::TemporalKernels => v.as_array().is_some_and(|stages| {
                stages.len() == 4
                    && stages.iter().zip(blocks(depth)).all(|(s, b)| {
                        s.as_array().is_some_and(|p| {
                            p.len() == 2
                                && p.iter()
                                    .all(|n| n.as_u64().is_some_and(|n| n >= u64::from(b)))
                        })
                    })
            }),
            _ => same(v, &self.ours(depth)),
        }
    }
}

/// A PySlowFast config read as ours.
#[derive(Debug, Clone)]
pub struct Import {
    pub config: Config,
    /// One line each: what is ignored, and where the run will differ from PySlowFast's.
    pub warnings: Vec<String>,
    /// NUM_GPUS x NUM_SHARDS (NUM_GPUS 0, PySlowFast's CPU run, counts one): the ranks the
    /// config was written for. `train.batch_size` is the global batch over them; on another
    /// count of ranks the global batch stays and each rank's share changes.
    pub world_size: u32,
    /// TRAIN.CHECKPOINT_FILE_PATH when set: the weights to fine-tune from (`--init-from`).
    pub init_from: Option<PathBuf>,
    /// OUTPUT_DIR.
    pub output_dir: PathBuf,
}

fn set_path(v: &mut Value, path: &str, value: Value) {
    let mut node = v;
    for part in path.split('.') {
        node = &mut node[part];
    }
    *node = value;
}

fn get_path<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |node, part| &node[part])
}

fn to_u32(key: &str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| config_err(format!("{key} {v} is out of range")))
}

impl PySlowFastCfg {
    /// Our config for this PySlowFast config. Every key is accounted for: mapped, worked
    /// out, ignored (listed in one warning) or held to what our SlowFast implements; a key
    /// whose value we do not implement is an error naming it (all such keys in one error).
    pub fn to_config(&self) -> Result<Import> {
        let defaults = defaults()?;
        let mut ours = serde_json::to_value(Config::default())
            .map_err(|e| Error::Internal(format!("the default config as JSON: {e}")))?;
        let depth = to_u32("RESNET.DEPTH", self.int("RESNET.DEPTH")?)?;
        let (mut ignored, mut unsupported, mut warnings) = (Vec::new(), Vec::new(), Vec::new());
        for (key, value) in self.iter() {
            let at_default = defaults.get(key).is_some_and(|d| same(value, d));
            match rule(key) {
                Some(Same(path)) => set_path(&mut ours, path, value.clone()),
                Some(Derived | Unused) => {}
                Some(Ignored) if !at_default => ignored.push(key),
                Some(Fixed(f)) if !at_default && !f.accepts(value, depth) => unsupported.push(
                    format!("{key} = {value}: our SlowFast implements {}", f.ours(depth)),
                ),
                None if !at_default => unsupported.push(format!(
                    "{key} = {value}: not implemented (only PySlowFast's default, {}, is)",
                    defaults.get(key).unwrap_or(&Value::Null)
                )),
                _ => {}
            }
        }
        let (world_size, init_from, output_dir) =
            self.derive(&mut ours, &mut warnings, &mut unsupported)?;
        if !unsupported.is_empty() {
            return Err(config_err(format!(
                "PySlowFast settings multigrid does not support: {}",
                unsupported.join("; ")
            )));
        }
        if !ignored.is_empty() {
            warnings.insert(
                0,
                format!(
                    "ignored (they change nothing multigrid computes): {}",
                    ignored.join(", ")
                ),
            );
        }
        let config = Config::from_json(&ours.to_string()).map_err(name_pyslowfast_key)?;
        Ok(Import {
            config,
            warnings,
            world_size,
            init_from,
            output_dir,
        })
    }

    /// The keys worked out from others: batch and world size, evaluation batch, device,
    /// precision, collective engine, test dataset, checkpoint to start from, BN groups; gives
    /// the world size, the checkpoint and the output directory.
    fn derive(
        &self,
        ours: &mut Value,
        warnings: &mut Vec<String>,
        unsupported: &mut Vec<String>,
    ) -> Result<(u32, Option<PathBuf>, PathBuf)> {
        let gpus = self.int("NUM_GPUS")?;
        let shards = self.int("NUM_SHARDS")?;
        // PySlowFast's TRAIN.BATCH_SIZE is one machine's (shard's) batch over its NUM_GPUS.
        let per_machine = gpus.max(1);
        let batch = self.int("TRAIN.BATCH_SIZE")?;
        set_path(ours, "train.batch_size", json!(batch * shards));
        set_path(
            ours,
            "run.eval_batch_size",
            json!(self.int("TEST.BATCH_SIZE")? / per_machine),
        );
        if gpus == 0 {
            set_path(ours, "run.device", json!("cpu"));
        }
        if self.bool("TRAIN.MIXED_PRECISION")? {
            set_path(ours, "run.precision", json!(PrecisionChoice::Fp16));
        }
        match self.str("DIST_BACKEND")? {
            "nccl" => {}
            "mpi" => set_path(ours, "run.dist_backend", json!("mpi")),
            other => unsupported.push(format!(
                "DIST_BACKEND = {other:?}: multigrid's engines are nccl and mpi"
            )),
        }
        let (train, test) = (self.str("TRAIN.DATASET")?, self.str("TEST.DATASET")?);
        if self.bool("TEST.ENABLE")? && test != train {
            unsupported.push(format!(
                "TEST.DATASET = {test:?}: multigrid tests on TRAIN.DATASET's ({train:?}) data"
            ));
        }
        let init_from = match self.str("TRAIN.CHECKPOINT_FILE_PATH")? {
            "" => None,
            path => Some(PathBuf::from(path)),
        };
        if let (Some(path), "caffe2") = (&init_from, self.str("TRAIN.CHECKPOINT_TYPE")?) {
            warnings.push(format!(
                "TRAIN.CHECKPOINT_TYPE caffe2: {} is a Caffe2 .pkl, which multigrid does not \
                 read (it reads its own checkpoints and PySlowFast .pyth files)",
                path.display()
            ));
        }
        let world_size = to_u32("NUM_GPUS x NUM_SHARDS", per_machine * shards)?;
        let bn_base = self.bn_base_size(batch / per_machine, world_size, warnings, unsupported)?;
        set_path(ours, "multigrid.bn_base_size", json!(bn_base));
        Ok((
            world_size,
            init_from,
            PathBuf::from(self.str("OUTPUT_DIR")?),
        ))
    }

    /// `multigrid.bn_base_size`: clips per BN statistics group. With the long cycle,
    /// MULTIGRID.BN_BASE_SIZE, as PySlowFast's multigrid sets BN.NORM_TYPE per stage from it.
    /// Otherwise the group BN.NORM_TYPE gives a GPU of `per_gpu` clips (the whole batch,
    /// NUM_SPLITS parts of it, or NUM_SYNC_DEVICES GPUs' batches), so that a world of
    /// NUM_GPUS x NUM_SHARDS ranks groups as PySlowFast does, and one device groups as the
    /// recipe's GPUs did.
    fn bn_base_size(
        &self,
        per_gpu: i64,
        world_size: u32,
        warnings: &mut Vec<String>,
        unsupported: &mut Vec<String>,
    ) -> Result<i64> {
        let norm = self.str("BN.NORM_TYPE")?;
        let long_cycle = self.bool("MULTIGRID.LONG_CYCLE")?;
        if ![
            "batchnorm",
            "sub_batchnorm",
            "sync_batchnorm",
            "sync_batchnorm_apex",
        ]
        .contains(&norm)
        {
            unsupported.push(format!(
                "BN.NORM_TYPE = {norm:?}: PySlowFast's are batchnorm, sub_batchnorm and sync_batchnorm"
            ));
        }
        if self.bool("BN.GLOBAL_SYNC")? && (long_cycle || norm == "sync_batchnorm") {
            unsupported.push(
                "BN.GLOBAL_SYNC = True: multigrid pools sync BN statistics over groups of \
                 BN.NUM_SYNC_DEVICES ranks, not all of them"
                    .to_string(),
            );
        }
        let base = self.int("MULTIGRID.BN_BASE_SIZE")?;
        if long_cycle {
            return Ok(base);
        }
        if defaults()?
            .get("MULTIGRID.BN_BASE_SIZE")
            .is_some_and(|d| d.as_i64() != Some(base))
        {
            warnings.push(
                "MULTIGRID.BN_BASE_SIZE is read with MULTIGRID.LONG_CYCLE only (as in \
                 PySlowFast); BN groups follow BN.NORM_TYPE"
                    .to_string(),
            );
        }
        Ok(match norm {
            "sub_batchnorm" => {
                let k = self.int("BN.NUM_SPLITS")?;
                if k < 1 || per_gpu % k != 0 {
                    unsupported.push(format!(
                        "BN.NUM_SPLITS = {k}: it must divide the batch per GPU \
                         (TRAIN.BATCH_SIZE / NUM_GPUS = {per_gpu})"
                    ));
                    return Ok(per_gpu);
                }
                per_gpu / k
            }
            "sync_batchnorm" => {
                let d = self.int("BN.NUM_SYNC_DEVICES")?.max(1);
                if world_size > 1 && d > 1 {
                    warnings.push(format!(
                        "BN.NORM_TYPE sync_batchnorm without MULTIGRID.LONG_CYCLE: multigrid \
                         pools BN statistics over ranks with the long cycle only, so on \
                         {world_size} ranks each normalises its own {per_gpu} clips; on one \
                         device the groups hold the {} clips of {d} GPUs",
                        per_gpu * d
                    ));
                }
                per_gpu * d
            }
            _ => per_gpu,
        })
    }
}

/// Adds the PySlowFast key to an error that names our key.
fn name_pyslowfast_key(e: Error) -> Error {
    let Error::Config(mut msg) = e else { return e };
    // serde's position is in the JSON we wrote, not in the user's file.
    if let Some(at) = msg.rfind(" at line ") {
        msg.truncate(at);
    }
    let derived = [
        ("train.batch_size", "TRAIN.BATCH_SIZE x NUM_SHARDS"),
        ("run.eval_batch_size", "TEST.BATCH_SIZE / NUM_GPUS"),
        (
            "multigrid.bn_base_size",
            "MULTIGRID.BN_BASE_SIZE or BN.NORM_TYPE",
        ),
    ];
    let theirs: Vec<&str> = KEYS
        .iter()
        .filter_map(|&(k, r)| match r {
            Same(path) => Some((path, k)),
            _ => None,
        })
        .chain(derived)
        .filter(|(path, _)| msg.contains(path))
        .map(|(_, k)| k)
        .collect();
    if theirs.is_empty() {
        return Error::Config(msg);
    }
    Error::Config(format!("{msg} (from PySlowFast's {})", theirs.join(", ")))
}

/// Our config under PySlowFast's key names, nested by section, for a run of `world_size`
/// ranks: what PySlowFast needs to build, train and test the same model (NUM_GPUS is the
/// world size, NUM_SHARDS 1). With the long cycle, BN.NORM_TYPE is batchnorm and
/// MULTIGRID.BN_BASE_SIZE ours (PySlowFast sets BN per stage from it); without it, the BN
/// that ours uses on `world_size` ranks.
pub fn to_pyslowfast(c: &Config, world_size: u32) -> Value {
    // Through text, so an f32 such as 0.45 is written 0.45 rather than 0.44999998807907104.
    let ours: Value = serde_json::to_string(c)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let world = world_size.max(1);
    let mut out = json!({});
    let mut put = |key: &str, value: Value| {
        let mut node = &mut out;
        for part in key.split('.') {
            node = &mut node[part];
        }
        *node = value;
    };
    for &(key, r) in KEYS {
        match r {
            Same(path) => put(key, get_path(&ours, path).clone()),
            Fixed(f) => put(key, f.ours(c.model.depth)),
            _ => {}
        }
    }
    put("TRAIN.BATCH_SIZE", json!(c.train.batch_size));
    put(
        "TEST.BATCH_SIZE",
        json!(c.run.eval_batch_size as u64 * u64::from(world)),
    );
    put("TEST.DATASET", get_path(&ours, "train.dataset").clone());
    put("NUM_GPUS", json!(world_size));
    put("NUM_SHARDS", json!(1));
    put(
        "TRAIN.MIXED_PRECISION",
        json!(c.run.precision == PrecisionChoice::Fp16),
    );
    let mpi = c.run.dist_backend == crate::schedule::DistBackend::Mpi;
    put("DIST_BACKEND", json!(if mpi { "mpi" } else { "nccl" }));
    put("MULTIGRID.BN_BASE_SIZE", json!(c.multigrid.bn_base_size));
    let per_rank = f64::from(c.train.batch_size) / f64::from(world);
    let splits = (per_rank / f64::from(c.multigrid.bn_base_size.max(1))) as u32;
    if !c.multigrid.long_cycle && splits > 1 {
        put("BN.NORM_TYPE", json!("sub_batchnorm"));
        put("BN.NUM_SPLITS", json!(splits));
    } else {
        put("BN.NORM_TYPE", json!("batchnorm"));
    }
    out
}
