//! PySlowFast's config keys and ours, both ways, from one table ([`KEYS`]):
//! [`PySlowFastCfg::to_config`] reads a PySlowFast config as ours, and [`to_pyslowfast`] writes
//! ours under PySlowFast's names (the `cfg` of an exported checkpoint).
//!
//! Every PySlowFast key is mapped onto ours, worked out from others (batch and world size, BN,
//! precision, the network: MODEL.ARCH with MODEL_NAME, the non-local blocks), ignored with a
//! warning (it changes nothing we compute: TensorBoard, pinned memory), unused (it has no
//! effect given the accepted values), or held to what our network of that MODEL.ARCH
//! implements (one entry per pathway in RESNET's per-stage lists). Any other key must keep
//! PySlowFast's default: a value that would change what PySlowFast computes, and that we do
//! not implement, is an error naming the key.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::load::{defaults, same, PySlowFastCfg};
use crate::error::{config_err, Error, Result};
use crate::schedule::{Arch, Config, PrecisionChoice};

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
    /// Must hold what our network implements: checked for a single-pathway MODEL.ARCH, and for
    /// slowfast when it differs from the default (PySlowFast's defaults are one pathway's).
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
    ("NONLOCAL.LOCATION", Derived),
    ("NONLOCAL.GROUP", Derived),
    (
        "NONLOCAL.INSTANTIATION",
        Same("model.nonlocal_instantiation"),
    ),
    ("NONLOCAL.POOL", Derived),
    ("MODEL.ARCH", Derived),
    ("MODEL.MODEL_NAME", Derived),
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

/// Keys held to what our network implements.
#[derive(Debug, Clone, Copy)]
enum Fixed {
    TransFunc,
    /// PySlowFast gives a stage's temporal kernel to its first N blocks and 1 to the rest;
    /// ours gives it to every block.
    TemporalKernels,
    SpatialStrides,
    Dilations,
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

/// Pathways of `arch`, the entries of each per-pathway list: 2 for slowfast, else 1.
fn pathways(arch: Arch) -> usize {
    if arch == Arch::SlowFast {
        2
    } else {
        1
    }
}

/// PySlowFast's MODEL.MODEL_NAME for `arch`: the class that builds it.
fn model_name(arch: Arch) -> &'static str {
    if arch == Arch::SlowFast {
        "SlowFast"
    } else {
        "ResNet"
    }
}

impl Fixed {
    /// What our network of `pathways` pathways implements, as PySlowFast writes it.
    fn ours(self, depth: u32, pathways: usize) -> Value {
        let per_stage = |v: [u32; 4]| json!(v.map(|n| vec![n; pathways]));
        match self {
            Fixed::TransFunc if depth == 18 => json!("basic_transform"),
            Fixed::TransFunc => json!("bottleneck_transform"),
            Fixed::TemporalKernels => per_stage(blocks(depth)),
            Fixed::SpatialStrides => per_stage([1, 2, 2, 2]),
            Fixed::Dilations => per_stage([1; 4]),
            Fixed::InputChannels => json!(vec![3; pathways]),
            Fixed::Sgd => json!("sgd"),
            Fixed::BnWeightDecay => json!(0.0),
        }
    }

    fn accepts(self, v: &Value, depth: u32, pathways: usize) -> bool {
        match self {
            // Any count at least the stage's blocks gives every block the kernel.
            Fixed::TemporalKernels => v.as_array().is_some_and(|stages| {
                stages.len() == 4
                    && stages.iter().zip(blocks(depth)).all(|(s, b)| {
                        s.as_array().is_some_and(|p| {
                            p.len() == pathways
                                && p.iter()
                                    .all(|n| n.as_u64().is_some_and(|n| n >= u64::from(b)))
                        })
                    })
            }),
            _ => same(v, &self.ours(depth, pathways)),
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
    /// out, ignored (listed in one warning) or held to what our network implements; a key
    /// whose value we do not implement is an error naming it (all such keys in one error).
    pub fn to_config(&self) -> Result<Import> {
        let defaults = defaults()?;
        let mut ours = serde_json::to_value(Config::default())
            .map_err(|e| Error::Internal(format!("the default config as JSON: {e}")))?;
        let depth = to_u32("RESNET.DEPTH", self.int("RESNET.DEPTH")?)?;
        let (mut ignored, mut unsupported, mut warnings) = (Vec::new(), Vec::new(), Vec::new());
        let arch = self.arch(&mut unsupported)?;
        let (p, one_pathway) = (pathways(arch), arch != Arch::SlowFast);
        set_path(&mut ours, "model.arch", json!(arch));
        for (key, value) in self.iter() {
            let at_default = defaults.get(key).is_some_and(|d| same(value, d));
            let rule = match rule(key) {
                // PySlowFast's ResNet reads no SLOWFAST key.
                Some(Same(_)) if one_pathway && key.starts_with("SLOWFAST.") => Some(Ignored),
                r => r,
            };
            match rule {
                Some(Same(path)) => set_path(&mut ours, path, value.clone()),
                Some(Derived | Unused) => {}
                Some(Ignored) if !at_default => ignored.push(key),
                Some(Fixed(f)) if (one_pathway || !at_default) && !f.accepts(value, depth, p) => {
                    unsupported.push(format!(
                        "{key} = {value}: multigrid's {arch} implements {}",
                        f.ours(depth, p)
                    ))
                }
                None if !at_default => unsupported.push(format!(
                    "{key} = {value}: not implemented (only PySlowFast's default, {}, is)",
                    defaults.get(key).unwrap_or(&Value::Null)
                )),
                _ => {}
            }
        }
        self.nonlocal(arch, &mut ours, &mut unsupported)?;
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

    /// `model.arch` from MODEL.ARCH and MODEL.MODEL_NAME: slowfast built by SlowFast, c2d, i3d
    /// and slow by ResNet. Another arch, or a pair PySlowFast would not build, is an error
    /// naming the keys; then the pathways MODEL_NAME gives stand in, for the other checks.
    fn arch(&self, unsupported: &mut Vec<String>) -> Result<Arch> {
        let (arch, name) = (self.str("MODEL.ARCH")?, self.str("MODEL.MODEL_NAME")?);
        let stand_in = if name == "ResNet" {
            Arch::I3d
        } else {
            Arch::SlowFast
        };
        let Ok(parsed) = arch.parse::<Arch>() else {
            unsupported.push(format!(
                "MODEL.ARCH = {arch:?}: multigrid implements slowfast (MODEL.MODEL_NAME \
                 SlowFast), c2d, i3d and slow (MODEL.MODEL_NAME ResNet)"
            ));
            return Ok(stand_in);
        };
        if name != model_name(parsed) {
            unsupported.push(format!(
                "MODEL.ARCH = {arch:?} with MODEL.MODEL_NAME = {name:?}: PySlowFast builds \
                 {arch} with MODEL.MODEL_NAME {}",
                model_name(parsed)
            ));
            return Ok(stand_in);
        }
        Ok(parsed)
    }

    /// NONLOCAL.{LOCATION, GROUP, POOL} onto `model.nonlocal_*`, each left empty where it
    /// holds what the empty list means (no block, groups of 1, pools of [1, 2, 2]). Their
    /// shapes are PySlowFast's: 4 stages (res2..res5) of one entry per pathway (POOL may hold
    /// more, as its default's two for a single pathway: PySlowFast reads the first ones).
    /// slowfast without non-local blocks does not read GROUP and POOL (PySlowFast's
    /// single-pathway defaults pass, as before SlowFast-NL).
    fn nonlocal(&self, arch: Arch, ours: &mut Value, unsupported: &mut Vec<String>) -> Result<()> {
        fn parse<T: serde::de::DeserializeOwned>(v: &Value) -> Option<T> {
            serde_json::from_value(v.clone()).ok()
        }
        let value = |key: &str| {
            self.get(key)
                .ok_or_else(|| Error::Internal(format!("{key} is not in PySlowFast's defaults")))
        };
        let p = pathways(arch);
        let shape = |stages: Option<Vec<usize>>, exact: bool| {
            stages.is_some_and(|s| {
                s.len() == 4 && s.iter().all(|&n| if exact { n == p } else { n >= p })
            })
        };
        let per_pathway = |what: &str| {
            format!("4 stages (res2..res5) of {p} {what} (one per pathway of MODEL.ARCH {arch})")
        };
        let v = value("NONLOCAL.LOCATION")?;
        let location: Option<Vec<Vec<Vec<u32>>>> = parse(v);
        let any = location
            .as_ref()
            .is_some_and(|l| l.iter().flatten().any(|b| !b.is_empty()));
        if arch == Arch::SlowFast && location.is_some() && !any {
            return Ok(());
        }
        if !shape(
            location.as_ref().map(|l| l.iter().map(Vec::len).collect()),
            true,
        ) {
            unsupported.push(format!(
                "NONLOCAL.LOCATION = {v}: {}",
                per_pathway("lists of block indices")
            ));
        } else if any {
            set_path(ours, "model.nonlocal_location", v.clone());
        }
        let v = value("NONLOCAL.GROUP")?;
        let group: Option<Vec<Vec<u32>>> = parse(v);
        if !shape(
            group.as_ref().map(|g| g.iter().map(Vec::len).collect()),
            true,
        ) {
            unsupported.push(format!("NONLOCAL.GROUP = {v}: {}", per_pathway("counts")));
        } else if group.iter().flatten().flatten().any(|&g| g != 1) {
            set_path(ours, "model.nonlocal_group", v.clone());
        }
        let v = value("NONLOCAL.POOL")?;
        let pool: Option<Vec<Vec<[u32; 3]>>> = parse(v);
        if !shape(
            pool.as_ref().map(|s| s.iter().map(Vec::len).collect()),
            false,
        ) {
            unsupported.push(format!(
                "NONLOCAL.POOL = {v}: {}",
                per_pathway("[T, H, W] pools (or more)")
            ));
        } else if let Some(pool) = pool {
            let read: Vec<Vec<[u32; 3]>> = pool.into_iter().map(|s| s[..p].to_vec()).collect();
            if read.iter().flatten().any(|k| *k != [1, 2, 2]) {
                set_path(ours, "model.nonlocal_pool", json!(read));
            }
        }
        Ok(())
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
        // --init-from reads a Caffe2 checkpoint by its .pkl name (train::pretrained).
        let is_pkl = |p: &PathBuf| p.extension().is_some_and(|e| e == "pkl");
        if let (Some(path), "caffe2") = (&init_from, self.str("TRAIN.CHECKPOINT_TYPE")?) {
            if !is_pkl(path) {
                warnings.push(format!(
                    "TRAIN.CHECKPOINT_TYPE caffe2: {} will be read as a Caffe2 checkpoint only \
                     if its name ends in .pkl",
                    path.display()
                ));
            }
        }
        let world_size = to_u32("NUM_GPUS x NUM_SHARDS", per_machine * shards)?;
        let (bn_base, sync) =
            self.bn_base_size(batch / per_machine, shards, warnings, unsupported)?;
        set_path(ours, "multigrid.bn_base_size", json!(bn_base));
        if sync > 1 {
            set_path(ours, "multigrid.bn_sync_devices", json!(sync));
        }
        Ok((
            world_size,
            init_from,
            PathBuf::from(self.str("OUTPUT_DIR")?),
        ))
    }

    /// `multigrid.bn_base_size` (clips per BN statistics group) and
    /// `multigrid.bn_sync_devices`. With the long cycle, MULTIGRID.BN_BASE_SIZE and no sync
    /// devices, as PySlowFast's multigrid sets BN.NORM_TYPE per stage from it. Otherwise the
    /// group BN.NORM_TYPE gives a GPU of `per_gpu` clips (the whole batch, NUM_SPLITS parts of
    /// it, or NUM_SYNC_DEVICES GPUs' batches, all NUM_GPUS with GLOBAL_SYNC), so that a world
    /// of NUM_GPUS x NUM_SHARDS ranks groups as PySlowFast does, and one device groups as the
    /// recipe's GPUs did.
    fn bn_base_size(
        &self,
        per_gpu: i64,
        shards: i64,
        warnings: &mut Vec<String>,
        unsupported: &mut Vec<String>,
    ) -> Result<(i64, i64)> {
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
        let global_sync = self.bool("BN.GLOBAL_SYNC")?;
        if global_sync && (long_cycle || (norm == "sync_batchnorm" && shards > 1)) {
            unsupported.push(
                "BN.GLOBAL_SYNC = True: multigrid pools sync BN statistics over ranks of one \
                 machine (NUM_SHARDS 1) and, with the long cycle, over groups of the stage's \
                 NUM_SYNC_DEVICES ranks, not all of them"
                    .to_string(),
            );
        }
        let base = self.int("MULTIGRID.BN_BASE_SIZE")?;
        if long_cycle {
            return Ok((base, 1));
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
                    return Ok((per_gpu, 1));
                }
                (per_gpu / k, 1)
            }
            "sync_batchnorm" => {
                let d = if global_sync {
                    self.int("NUM_GPUS")?
                } else {
                    self.int("BN.NUM_SYNC_DEVICES")?
                }
                .max(1);
                (per_gpu * d, d)
            }
            _ => (per_gpu, 1),
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
        (
            "multigrid.bn_sync_devices",
            "BN.NUM_SYNC_DEVICES or BN.GLOBAL_SYNC",
        ),
        ("model.arch", "MODEL.ARCH"),
        ("model.nonlocal_location", "NONLOCAL.LOCATION"),
        ("model.nonlocal_group", "NONLOCAL.GROUP"),
        ("model.nonlocal_pool", "NONLOCAL.POOL"),
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
/// that ours uses on `world_size` ranks (sub_batchnorm, sync_batchnorm over
/// BN.NUM_SYNC_DEVICES ranks, or batchnorm).
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
    let m = &c.model;
    let p = pathways(m.arch);
    let psf_defaults = defaults().ok();
    for &(key, r) in KEYS {
        match r {
            // PySlowFast's ResNet reads no SLOWFAST key: its defaults, not our SlowFast's.
            Same(_) if p == 1 && key.starts_with("SLOWFAST.") => {
                if let Some(d) = psf_defaults.and_then(|d| d.get(key)) {
                    put(key, d.clone())
                }
            }
            Same(path) => put(key, get_path(&ours, path).clone()),
            Fixed(f) => put(key, f.ours(m.depth, p)),
            _ => {}
        }
    }
    // Left out of our JSON at their defaults.
    put("NONLOCAL.INSTANTIATION", json!(m.nonlocal_instantiation));
    put("MODEL.ARCH", json!(m.arch));
    put("MODEL.MODEL_NAME", json!(model_name(m.arch)));
    // Read even without non-local blocks: ResStage asserts one entry per pathway in
    // LOCATION and GROUP; POOL's default holds two, of which a single pathway reads the first.
    let or = |ours: &Value, empty: Value| match ours {
        Value::Array(a) if !a.is_empty() => ours.clone(),
        _ => empty,
    };
    let model = &ours["model"];
    put(
        "NONLOCAL.LOCATION",
        or(
            &model["nonlocal_location"],
            json!(vec![vec![json!([]); p]; 4]),
        ),
    );
    put(
        "NONLOCAL.GROUP",
        or(&model["nonlocal_group"], json!(vec![vec![1; p]; 4])),
    );
    put(
        "NONLOCAL.POOL",
        or(
            &model["nonlocal_pool"],
            json!(vec![[[1, 2, 2], [1, 2, 2]]; 4]),
        ),
    );
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
    let sync = crate::schedule::Schedule::new(c.clone()).map_or(1, |s| {
        s.bn_grouping_of(u64::from(c.train.batch_size), world)
            .sync_ranks
    });
    if !c.multigrid.long_cycle && splits > 1 {
        put("BN.NORM_TYPE", json!("sub_batchnorm"));
        put("BN.NUM_SPLITS", json!(splits));
    } else if !c.multigrid.long_cycle && sync > 1 {
        put("BN.NORM_TYPE", json!("sync_batchnorm"));
        put("BN.NUM_SYNC_DEVICES", json!(sync));
    } else {
        put("BN.NORM_TYPE", json!("batchnorm"));
    }
    out
}
