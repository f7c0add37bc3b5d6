//! The run configuration: JSON with PySlowFast's key names in snake_case.
//!
//! This file is the one place where every key and its default is documented. Defaults are
//! PySlowFast's (`slowfast/config/defaults.py`), so a config that states only what a PySlowFast
//! YAML states means the same thing. Unknown keys are rejected with their full path.

use serde::{Deserialize, Serialize};

use super::choices::{
    Arch, CudnnBenchmark, DatasetKind, DeviceChoice, DistBackend, EnsembleMethod, HeadAct,
    InitMethod, LossFunc, MemoryFormat, NonlocalInstantiation, PrecisionChoice, ValProtocol,
};
use crate::error::{config_err, Error, Result};

/// PySlowFast's DATA.MEAN and DATA.STD: the normalisation every front end defaults to (the
/// config, collation's `Normalize`, the bindings through the C API).
pub const DEFAULT_MEAN: [f32; 3] = [0.45; 3];
pub const DEFAULT_STD: [f32; 3] = [0.225; 3];

/// `run.dist_timeout_s`'s bounds in seconds, which the C API's explicit timeout shares.
pub const MAX_DIST_TIMEOUT_S: f64 = 86_400.0;
pub const MIN_DIST_TIMEOUT_S: f64 = 1.0;

/// Upper bounds of the config's numbers. Generous for any real run (Kinetics' recipe is 2 to 3
/// orders of magnitude inside each), and small enough that every size derived from them (the
/// plan's per-epoch table, a step's clip count, a batch's bytes) fits in memory and in the
/// integers that carry it, so a typo becomes an error naming the key instead of an allocation
/// that aborts the host process.
pub mod limits {
    /// `solver.max_epoch`, and the schedule's epochs after `multigrid.epoch_factor`.
    pub const MAX_EPOCHS: u32 = 100_000;
    /// `multigrid.epoch_factor`.
    pub const MAX_EPOCH_FACTOR: f64 = 100.0;
    /// `data.num_frames`, and the frames any collation call asks for.
    pub const MAX_FRAMES: u32 = 1024;
    /// `data.sampling_rate`, and the temporal stride any collation call asks for.
    pub const MAX_SAMPLING_RATE: u32 = 1024;
    /// `data.train_crop_size`, `data.test_crop_size`, and the crop any collation call asks for.
    pub const MAX_CROP: u32 = 4096;
    /// `data.train_jitter_scales` (short side in pixels).
    pub const MAX_SHORT_SIDE: u32 = 16_384;
    /// `data.target_fps`.
    pub const MAX_FPS: u32 = 1000;
    /// Clips in one step on one process: `train.batch_size`, and every stage's batch after the
    /// long- and short-cycle factors; also `multigrid.bn_base_size`.
    pub const MAX_BATCH: u64 = 1 << 20;
    /// Entries of `solver.steps` (LR stages) and of `multigrid.long_cycle_factors`.
    pub const MAX_LIST: usize = 1000;
    /// `model.width_per_group`.
    pub const MAX_WIDTH: u32 = 4096;
    /// `model.alpha`, `model.beta_inv`, `model.fusion_conv_channel_ratio`.
    pub const MAX_RATIO: u32 = 64;
    /// `model.fusion_kernel_sz`.
    pub const MAX_KERNEL: u32 = 31;
    /// `model.num_classes`.
    pub const MAX_CLASSES: u32 = 1_000_000;
    /// `run.num_workers`, and collation threads.
    pub const MAX_THREADS: usize = 1024;
    /// `run.queue_clips`, `run.eval_batch_size`, `run.precise_bn_batches`.
    pub const MAX_QUEUE: usize = 1 << 20;
    /// `run.test_num_temporal_views`.
    pub const MAX_VIEWS: u32 = 1024;
    /// Clips in a dataset or a plan (2^48).
    pub const MAX_DATASET: u64 = 1 << 48;
}
use limits::*;

/// The whole configuration. Section `run` (devices, output) joins with the trainer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data: DataConfig,
    pub train: TrainConfig,
    pub solver: SolverConfig,
    pub multigrid: MultigridConfig,
    pub model: ModelConfig,
    pub run: RunConfig,
}

/// `run`: how this run executes (not part of PySlowFast's method).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// `auto` (CUDA when present), `cpu` or `cuda:N`. Default auto.
    pub device: DeviceChoice,
    /// Seed of the data order, augmentation, init and dropout. Default 0.
    pub seed: u64,
    /// Training data: a directory with train.csv / val.csv / test.csv (video lists), where a
    /// `{split}.mgstore` clip store, else a `{split}.mgframes` frame store, beside them is used
    /// instead when present. Default "".
    pub data_dir: String,
    /// Loader threads. Default 2.
    pub num_workers: usize,
    /// Clips of the base shape (`data.num_frames` x `data.train_crop_size`) the loader may
    /// prepare ahead; a clip of a smaller multigrid shape counts its share of a base clip's
    /// values, so about the same memory is held ahead at every shape and 8-16x more clips at
    /// the small ones. Default 1024.
    pub queue_clips: usize,
    /// Write a metrics line every this many steps. Default 10.
    pub log_period: u64,
    /// Checkpoints kept (oldest removed). Default 3.
    pub keep_checkpoints: usize,
    /// Continue from the newest checkpoint under the output directory when there is one, as
    /// PySlowFast's TRAIN.AUTO_RESUME: a job restarted after preemption, a crash or a torchrun
    /// restart goes on where it stopped, with no new flag. Default true.
    pub auto_resume: bool,
    /// Recompute BN statistics (PySlowFast's precise BN) before every evaluation and
    /// checkpoint, at the shape the evaluation serves. PySlowFast's BN.USE_PRECISE_STATS, whose
    /// K400 configs set it. Default true.
    pub precise_bn: bool,
    /// Batches for precise BN, capped at what the train split holds. Default 200 (PySlowFast's
    /// BN.NUM_BATCHES_PRECISE).
    pub precise_bn_batches: usize,
    /// Mid-run validation. `train` (PySlowFast's): one clip per video drawn as in training
    /// (random start, stride, scale, crop and flip, seeded per epoch) at the shape of the stage
    /// just trained. `centre`: the centred clip at `data.num_frames` and the test crop, the same
    /// view at every epoch, so accuracies of runs whose stages differ (baseline against
    /// multigrid) or of successive epochs compare without sampling noise. Default train.
    pub val_protocol: ValProtocol,
    /// Clips per evaluation batch. Default 16.
    pub eval_batch_size: usize,
    /// Final test: temporal views per video. Default 10.
    pub test_num_temporal_views: u32,
    /// Final test: spatial crops per view. Default 3.
    pub test_num_spatial_crops: u32,
    /// Mixed precision: `auto` (bf16 autocast on CUDA, fp32 on the CPU), `fp32`, `bf16`
    /// (autocast) or `fp16` (autocast with a dynamic loss scaler, as torch.amp.GradScaler).
    /// Default auto.
    pub precision: PrecisionChoice,
    /// cudnn.benchmark: pick the fastest convolution algorithm per shape (CUDA only): `true`,
    /// `false` (cuDNN's heuristics) or `"auto"`, which measures at warm-up, per shape, whether
    /// autotuning repays itself over the steps the plan holds at that shape (cuDNN's search
    /// costs seconds per shape, which a shape of few steps never wins back). Default true, as
    /// the shapes of a multigrid run are few and known in advance.
    pub cudnn_benchmark: CudnnBenchmark,
    /// Memory layout of the network's activations and convolution weights: `contiguous`
    /// (NCDHW, PyTorch's default) or `channels_last_3d` (NDHWC, as
    /// `model.to(memory_format=torch.channels_last_3d)`; the values are the same either way).
    /// Default contiguous, which measured faster on the CPU (README, "Memory format").
    pub memory_format: MemoryFormat,
    /// Run one forward and backward at every shape the plan still holds before the first step,
    /// so no stage pays its first-call costs (cuDNN autotuning, allocator growth) mid-run.
    /// Parameters, BN statistics and the optimizer are left untouched. Default null: on CUDA
    /// only.
    pub warmup_shapes: Option<bool>,
    /// Capture one training step per (shape, BN groups) as a CUDA graph after two eager steps
    /// of it, and replay it for every later step of that shape: one launch instead of
    /// thousands of kernels. One process on CUDA, bf16 or fp32 (fp16's overflow check and
    /// several ranks' collectives run eagerly); a capture that fails says why and the run goes
    /// on eagerly. Default false until the GPU check measures it faster.
    pub cuda_graphs: bool,
    /// Collective engine when several processes train one model: `auto` (NCCL for CUDA ranks,
    /// MPI for CPU ranks), `nccl` or `mpi`. PySlowFast's DIST_BACKEND. Default auto.
    pub dist_backend: DistBackend,
    /// Where NCCL ranks meet: `env://` (MASTER_ADDR / MASTER_PORT, as torchrun sets them),
    /// `tcp://host:port` or `file:///path`. PySlowFast's INIT_METHOD. MPI ranks meet through
    /// their launcher. Default env://.
    pub dist_init_method: InitMethod,
    /// Seconds a rank waits in a collective for the others before it exits non-zero, naming
    /// itself and the operation: a peer that died or hangs never leaves the job waiting forever.
    /// Default 1800 (PyTorch's NCCL default).
    pub dist_timeout_s: f64,
    /// With several ranks, start each gradient bucket's all-reduce as soon as backward has
    /// produced its gradients, while backward goes on (DDP's reducer); false waits for the
    /// whole backward first. Steps where sync BN pools statistics over ranks always wait.
    /// Default true.
    pub overlap_grad_reduce: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            device: DeviceChoice::Auto,
            seed: 0,
            data_dir: String::new(),
            num_workers: 2,
            queue_clips: 1024,
            log_period: 10,
            keep_checkpoints: 3,
            auto_resume: true,
            precise_bn: true,
            precise_bn_batches: 200,
            val_protocol: ValProtocol::Train,
            eval_batch_size: 16,
            test_num_temporal_views: 10,
            test_num_spatial_crops: 3,
            precision: PrecisionChoice::Auto,
            cudnn_benchmark: CudnnBenchmark::On,
            memory_format: MemoryFormat::Contiguous,
            warmup_shapes: None,
            cuda_graphs: false,
            dist_backend: DistBackend::Auto,
            dist_init_method: InitMethod::Env,
            dist_timeout_s: 1800.0,
            overlap_grad_reduce: true,
        }
    }
}

/// `model`: the network, SlowFast (spec section 3) or a single-pathway ResNet (`arch`).
/// PySlowFast's RESNET, SLOWFAST, NONLOCAL and MODEL keys, flattened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// ResNet depth: 18 (basic blocks), 50 or 101 (bottlenecks). Default 50.
    pub depth: u32,
    /// Slow-pathway inner width of res2. Default 64.
    pub width_per_group: u32,
    /// Frame-rate ratio between the pathways. Default 4.
    pub alpha: u32,
    /// Channel ratio: fast width = slow width / beta_inv. Default 8.
    pub beta_inv: u32,
    /// Lateral fusion: output channels = ratio x fast channels. Default 2.
    pub fusion_conv_channel_ratio: u32,
    /// Temporal kernel of the lateral fusion conv; 7 in the released R50 configs. Default 7.
    pub fusion_kernel_sz: u32,
    /// Default 400.
    pub num_classes: u32,
    /// Dropout before the classifier. Default 0.5.
    pub dropout_rate: f64,
    /// Zero-init the last BN of every residual block. Default true.
    pub zero_init_final_bn: bool,
    /// PySlowFast's MODEL.LOSS_FUNC: `cross_entropy` over class indices, or `bce_logit`
    /// (binary cross-entropy on the logits, mean over clips and classes) over the multi-hot
    /// targets of a multi-label dataset (`data.multi_label`). Default `cross_entropy`.
    pub loss_func: LossFunc,
    /// PySlowFast's MODEL.HEAD_ACT, applied to the logits at evaluation: `softmax`, or
    /// `sigmoid` for multi-label scores. Default `softmax`.
    pub head_act: HeadAct,
    /// PySlowFast's MODEL.ARCH: `slowfast` (two pathways), or one pathway (MODEL_NAME ResNet):
    /// `c2d`, `i3d` or `slow`, with PySlowFast's temporal kernels and pooling per arch
    /// (`alpha`, `beta_inv` and the fusion keys then do nothing). Default `slowfast`.
    #[serde(skip_serializing_if = "is_default")]
    pub arch: Arch,
    /// PySlowFast's NONLOCAL.LOCATION: per stage (res2..res5), per pathway, the indices of the
    /// blocks followed by a non-local block, e.g. `[[[]], [[1, 3]], [[1, 3, 5]], [[]]]` (I3D-NL
    /// R50; SlowFast-NL: `[[[], []], [[1, 3], []], [[1, 3, 5], []], [[], []]]`). Empty (the
    /// default): no non-local block.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nonlocal_location: Vec<Vec<Vec<u32>>>,
    /// PySlowFast's NONLOCAL.GROUP: per stage, per pathway, how many groups of frames a
    /// non-local block compares separately. Empty (the default): 1 everywhere.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nonlocal_group: Vec<Vec<u32>>,
    /// PySlowFast's NONLOCAL.POOL: per stage, per pathway, the [T, H, W] max pool of a
    /// non-local block's keys and values. Empty (the default): [1, 2, 2] everywhere, as
    /// PySlowFast's default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nonlocal_pool: Vec<Vec<[u32; 3]>>,
    /// PySlowFast's NONLOCAL.INSTANTIATION: `dot_product` or `softmax`. Default `dot_product`
    /// (PySlowFast's default; its I3D-NL configs set `softmax`).
    #[serde(skip_serializing_if = "is_default")]
    pub nonlocal_instantiation: NonlocalInstantiation,
}

/// Whether `v` is its type's default, so that new keys stay out of configs that do not set them.
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl ModelConfig {
    /// Pathways of `arch`: 2 for SlowFast, else 1.
    pub fn pathways(&self) -> usize {
        if self.arch == Arch::SlowFast {
            2
        } else {
            1
        }
    }

    /// The `alpha` collation takes for this network (`mg_collate_step`'s): `alpha` for
    /// SlowFast, whose slow pathway it packs; 0 for a single-pathway arch, which takes the
    /// clip alone.
    pub fn collate_alpha(&self) -> u32 {
        if self.arch == Arch::SlowFast {
            self.alpha
        } else {
            0
        }
    }

    /// Residual blocks per stage (res2..res5) at `depth`, as PySlowFast's _MODEL_STAGE_DEPTH.
    pub fn stage_blocks(&self) -> [u32; 4] {
        match self.depth {
            18 => [2, 2, 2, 2],
            101 => [3, 4, 23, 3],
            _ => [3, 4, 6, 3],
        }
    }

    /// The non-local blocks' settings at `stage` (0 = res2) and `pathway`: the block indices
    /// they follow, their frame group count and their [T, H, W] pool.
    pub fn nonlocal_at(&self, stage: usize, pathway: usize) -> (Vec<u32>, u32, [u32; 3]) {
        fn at<T: Clone>(v: &[Vec<T>], stage: usize, pathway: usize) -> Option<T> {
            v.get(stage).and_then(|s| s.get(pathway)).cloned()
        }
        (
            at(&self.nonlocal_location, stage, pathway).unwrap_or_default(),
            at(&self.nonlocal_group, stage, pathway).unwrap_or(1),
            at(&self.nonlocal_pool, stage, pathway).unwrap_or([1, 2, 2]),
        )
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            depth: 50,
            width_per_group: 64,
            alpha: 4,
            beta_inv: 8,
            fusion_conv_channel_ratio: 2,
            fusion_kernel_sz: 7,
            num_classes: 400,
            dropout_rate: 0.5,
            zero_init_final_bn: true,
            loss_func: LossFunc::CrossEntropy,
            head_act: HeadAct::Softmax,
            arch: Arch::SlowFast,
            nonlocal_location: Vec::new(),
            nonlocal_group: Vec::new(),
            nonlocal_pool: Vec::new(),
            nonlocal_instantiation: NonlocalInstantiation::DotProduct,
        }
    }
}

/// `data`: the clip shape of the baseline (the multigrid default shape T0 x S0) and augmentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Frames per clip fed to the network (the fast pathway for SlowFast). T0. Default 8.
    pub num_frames: u32,
    /// Temporal stride between sampled frames, at `target_fps`. Default 8.
    pub sampling_rate: u32,
    /// Training crop side in pixels. S0. Default 224.
    pub train_crop_size: u32,
    /// Test crop side in pixels. Default 256.
    pub test_crop_size: u32,
    /// Short-side resize range `[min, max]` for training scale jitter. Default [256, 320].
    pub train_jitter_scales: [u32; 2],
    /// Frame rate that `sampling_rate` is expressed in. Default 30.
    pub target_fps: u32,
    /// Per-channel mean subtracted after scaling pixels to [0, 1]. Default [0.45; 3].
    pub mean: [f32; 3],
    /// Per-channel std divided by after the mean. Default [0.225; 3].
    pub std: [f32; 3],
    /// Horizontal flip with p = 0.5 in training. Default true.
    pub random_flip: bool,
    /// Draw the short side uniformly in 1/size instead of size. Default false.
    pub inv_uniform_sample: bool,
    /// PySlowFast's DATA.REVERSE_INPUT_CHANNEL: reverse the channels of the decoded frames, as
    /// PySlowFast does per dataset. Kinetics videos decode as RGB, so true feeds BGR; Charades'
    /// and SSv2's JPEG frames decode as BGR in PySlowFast (cv2), so true feeds RGB and false
    /// BGR (their shipped configs set it for an RGB-trained Kinetics checkpoint). Mean and std
    /// apply to the decoded channels in PySlowFast's order. Default false.
    pub reverse_input_channel: bool,
    /// Each clip has a set of labels (Charades): the batch carries multi-hot targets and
    /// evaluation reports mean average precision. Needs `model.loss_func` `bce_logit`.
    /// Default false.
    pub multi_label: bool,
    /// How the test views of a clip combine: `sum` of the scores, or their element-wise `max`
    /// (PySlowFast's Charades configs). Default `sum`.
    pub ensemble_method: EnsembleMethod,
    /// Prefix joined to the frame paths of Charades and SSv2 frame lists; empty takes them
    /// relative to `run.data_dir`. Default "".
    pub path_prefix: String,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            num_frames: 8,
            sampling_rate: 8,
            train_crop_size: 224,
            test_crop_size: 256,
            train_jitter_scales: [256, 320],
            target_fps: 30,
            mean: DEFAULT_MEAN,
            std: DEFAULT_STD,
            random_flip: true,
            inv_uniform_sample: false,
            reverse_input_channel: false,
            multi_label: false,
            ensemble_method: EnsembleMethod::Sum,
            path_prefix: String::new(),
        }
    }
}

/// `train`: batch and periodic actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Global mini-batch size over all ranks at the default shape. B0. Default 64.
    pub batch_size: u32,
    /// Evaluate every this many epochs (ignored with the long cycle, see `multigrid.eval_freq`).
    /// Default 10.
    pub eval_period: u32,
    /// Checkpoint every this many epochs (ignored with the long cycle). Default 10.
    pub checkpoint_period: u32,
    /// PySlowFast's TRAIN.DATASET, which says how `run.data_dir` is read: `kinetics` (a
    /// `path label` video list or a clip store per split), `charades` (frame lists with
    /// per-frame label sets; multi-label) or `ssv2` (frame lists and the label JSON files;
    /// frames sampled one per segment). Charades and SSv2 test on the val split, as PySlowFast
    /// does. Default `kinetics`.
    pub dataset: DatasetKind,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: 64,
            eval_period: 10,
            checkpoint_period: 10,
            dataset: DatasetKind::Kinetics,
        }
    }
}

/// Learning-rate policies of PySlowFast's `lr_policy.py`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrPolicy {
    /// `base_lr * lrs[i]` where `steps[i]` is the last step boundary at or before the epoch.
    /// Required by the long cycle, which writes its own `steps` and `lrs`.
    StepsWithRelativeLrs,
    /// `lrs[i]` as absolute values.
    StepsWithLrs,
    /// Half-cosine from `base_lr` to `cosine_end_lr` over `max_epoch`.
    Cosine,
}

/// `solver`: the baseline LR schedule and SGD settings. With the long cycle on, `steps`,
/// `lrs` and `max_epoch` describe the baseline the multigrid schedule is derived from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SolverConfig {
    /// Base learning rate. Default 0.1.
    pub base_lr: f64,
    /// Default `cosine`.
    pub lr_policy: LrPolicy,
    /// Epochs where LR stages begin; starts at 0 and increases. Default [].
    pub steps: Vec<u32>,
    /// One LR (relative or absolute, by policy) per entry of `steps`; extra entries are unused,
    /// as in PySlowFast's shipped configs. Default [].
    pub lrs: Vec<f64>,
    /// Training epochs of the baseline. Default 300.
    pub max_epoch: u32,
    /// LR decay per LR stage, used by the long cycle. Default 0.1.
    pub gamma: f64,
    /// Linear warm-up length in (multigrid) epochs. Default 0.
    pub warmup_epochs: f64,
    /// LR at epoch 0 of the warm-up. Default 0.01.
    pub warmup_start_lr: f64,
    /// Final LR of the cosine policy. Default 0.
    pub cosine_end_lr: f64,
    /// Start the cosine after the warm-up instead of at epoch 0. Default false.
    pub cosine_after_warmup: bool,
    /// SGD momentum. Default 0.9.
    pub momentum: f64,
    /// SGD dampening. Default 0.
    pub dampening: f64,
    /// Weight decay on conv and FC weights (BN parameters get none). Default 1e-4.
    pub weight_decay: f64,
    /// Nesterov momentum. Default true.
    pub nesterov: bool,
}

impl Default for SolverConfig {
    fn default() -> Self {
        SolverConfig {
            base_lr: 0.1,
            lr_policy: LrPolicy::Cosine,
            steps: Vec::new(),
            lrs: Vec::new(),
            max_epoch: 300,
            gamma: 0.1,
            warmup_epochs: 0.0,
            warmup_start_lr: 0.01,
            cosine_end_lr: 0.0,
            cosine_after_warmup: false,
            momentum: 0.9,
            dampening: 0.0,
            weight_decay: 1e-4,
            nesterov: true,
        }
    }
}

/// `multigrid`: the method's own settings (spec section 1.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MultigridConfig {
    /// Long cycle: coarse-to-fine base shapes, repeated in every LR stage. Default false.
    pub long_cycle: bool,
    /// Short cycle: three crop sizes cycling every iteration. Default false.
    pub short_cycle: bool,
    /// Multigrid epochs = `epoch_factor` x baseline `max_epoch`. Default 1.5.
    pub epoch_factor: f64,
    /// (temporal, spatial) factors of the long-cycle base shapes relative to (T0, S0).
    /// Default [[0.25, 0.7071], [0.5, 0.7071], [0.5, 1], [1, 1]] (0.7071 = 1/sqrt 2).
    pub long_cycle_factors: Vec<[f64; 2]>,
    /// Spatial factors, relative to S0, of the two extra short-cycle crops.
    /// Default [0.5, 0.7071].
    pub short_cycle_factors: [f64; 2],
    /// Clips per BN statistics group at the long-cycle base shape. Default 8.
    pub bn_base_size: u32,
    /// PySlowFast's BN.NUM_SYNC_DEVICES with BN.NORM_TYPE `sync_batchnorm`, for a run without
    /// the long cycle: BN pools its statistics over groups of up to this many consecutive
    /// ranks (of one machine), as many as it takes to reach `bn_base_size` clips, i.e.
    /// int(bn_base_size / per-rank batch) capped at this value. PySlowFast's Charades and SSv2
    /// baselines use 4 (2 clips per GPU, `bn_base_size` 8). The ranks per machine must be a
    /// multiple of the group, checked at start. 1 (default): each rank normalises its own
    /// batch (in int(per-rank batch / `bn_base_size`) groups when that is above 1). With the
    /// long cycle it must stay 1: the sync groups follow `bn_base_size` per stage (spec 1.10).
    pub bn_sync_devices: u32,
    /// Evaluations (and checkpoints) per long-cycle stage. Default 3.
    pub eval_freq: u32,
}

impl Default for MultigridConfig {
    fn default() -> Self {
        let r = std::f64::consts::FRAC_1_SQRT_2;
        MultigridConfig {
            long_cycle: false,
            short_cycle: false,
            epoch_factor: 1.5,
            long_cycle_factors: vec![[0.25, r], [0.5, r], [0.5, 1.0], [1.0, 1.0]],
            short_cycle_factors: [0.5, r],
            bn_base_size: 8,
            bn_sync_devices: 1,
            eval_freq: 3,
        }
    }
}

impl Config {
    /// Parses and validates a JSON config. Errors name the offending key path and value.
    pub fn from_json(text: &str) -> Result<Config> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path.is_empty() || path == "." {
                config_err(inner.to_string())
            } else {
                config_err(format!("{path}: {inner}"))
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The config as JSON, every key written out.
    pub fn to_json_string(&self) -> String {
        // Serialising plain structs of numbers, strings and lists cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Applies `SECTION.KEY=VALUE` overrides in order (the CLI's `--set`): VALUE is read as
    /// JSON when it parses (numbers, booleans, lists), as a string otherwise; SECTION and KEY
    /// are case-insensitive, so PySlowFast-style `SOLVER.MAX_EPOCH=10` works. An unknown
    /// section or key, or a value the config refuses, is an error naming it; on error the
    /// config is unchanged.
    pub fn apply_overrides<S: AsRef<str>>(&mut self, overrides: &[S]) -> Result<()> {
        if overrides.is_empty() {
            return Ok(());
        }
        let mut v = serde_json::to_value(&*self).map_err(|e| config_err(e.to_string()))?;
        for kv in overrides {
            let kv = kv.as_ref();
            let bad = || config_err(format!("override {kv:?}: expected SECTION.KEY=VALUE"));
            let (key, value) = kv.split_once('=').ok_or_else(bad)?;
            let key = key.trim().to_ascii_lowercase();
            let (section, field) = key.split_once('.').ok_or_else(bad)?;
            let value = serde_json::from_str(value)
                .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
            let obj = v
                .get_mut(section)
                .and_then(|s| s.as_object_mut())
                .ok_or_else(|| {
                    config_err(format!("override {kv:?}: no config section {section:?}"))
                })?;
            // An unknown key is left for the config's own check, which names it.
            obj.insert(field.to_string(), value);
        }
        *self = Config::from_json(&v.to_string())?;
        Ok(())
    }

    /// Reads a JSON config file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_json(&text).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Checks every rule that does not depend on the world size or dataset.
    pub fn validate(&self) -> Result<()> {
        let d = &self.data;
        positive("data.num_frames", d.num_frames)?;
        positive("data.sampling_rate", d.sampling_rate)?;
        positive("data.train_crop_size", d.train_crop_size)?;
        positive("data.test_crop_size", d.test_crop_size)?;
        positive("data.target_fps", d.target_fps)?;
        at_most("data.num_frames", d.num_frames, MAX_FRAMES)?;
        at_most("data.sampling_rate", d.sampling_rate, MAX_SAMPLING_RATE)?;
        at_most("data.train_crop_size", d.train_crop_size, MAX_CROP)?;
        at_most("data.test_crop_size", d.test_crop_size, MAX_CROP)?;
        at_most("data.target_fps", d.target_fps, MAX_FPS)?;
        let [jmin, jmax] = d.train_jitter_scales;
        if jmin == 0 || jmin > jmax {
            return Err(config_err(format!(
                "data.train_jitter_scales must be [min, max] with 0 < min <= max, got [{jmin}, {jmax}]"
            )));
        }
        at_most("data.train_jitter_scales[1]", jmax, MAX_SHORT_SIDE)?;
        for (c, s) in d.std.iter().enumerate() {
            if !(s.is_finite() && *s > 0.0) {
                return Err(config_err(format!(
                    "data.std[{c}] must be a positive number, got {s}"
                )));
            }
        }
        for (c, m) in d.mean.iter().enumerate() {
            if !m.is_finite() {
                return Err(config_err(format!(
                    "data.mean[{c}] must be finite, got {m}"
                )));
            }
        }
        positive("train.batch_size", self.train.batch_size)?;
        at_most_u64(
            "train.batch_size",
            u64::from(self.train.batch_size),
            MAX_BATCH,
        )?;
        positive("train.eval_period", self.train.eval_period)?;
        positive("train.checkpoint_period", self.train.checkpoint_period)?;
        self.validate_task()?;
        self.validate_solver()?;
        self.validate_multigrid()?;
        self.validate_model()?;
        let r = &self.run;
        if r.num_workers == 0 || r.eval_batch_size == 0 || r.log_period == 0 {
            return Err(config_err(
                "run.num_workers, run.eval_batch_size and run.log_period must be > 0",
            ));
        }
        at_most_u64("run.num_workers", r.num_workers as u64, MAX_THREADS as u64)?;
        for (key, v) in [
            ("run.queue_clips", r.queue_clips),
            ("run.eval_batch_size", r.eval_batch_size),
            ("run.precise_bn_batches", r.precise_bn_batches),
        ] {
            at_most_u64(key, v as u64, MAX_QUEUE as u64)?;
        }
        at_most(
            "run.test_num_temporal_views",
            r.test_num_temporal_views,
            MAX_VIEWS,
        )?;
        if r.test_num_temporal_views == 0 || !(1..=3).contains(&r.test_num_spatial_crops) {
            return Err(config_err(format!(
                "run.test_num_temporal_views must be > 0 and run.test_num_spatial_crops 1..=3, got {} and {}",
                r.test_num_temporal_views, r.test_num_spatial_crops
            )));
        }
        if !(r.dist_timeout_s.is_finite()
            && (MIN_DIST_TIMEOUT_S..=MAX_DIST_TIMEOUT_S).contains(&r.dist_timeout_s))
        {
            return Err(config_err(format!(
                "run.dist_timeout_s must be between {MIN_DIST_TIMEOUT_S} and {MAX_DIST_TIMEOUT_S} seconds, got {}",
                r.dist_timeout_s
            )));
        }
        Ok(())
    }

    /// The dataset, its labels, the loss and the head agree: PySlowFast would train a
    /// mismatched pair (soft-label cross-entropy on multi-hot targets, or fail deep inside the
    /// loss), so it is refused here with the keys to change.
    fn validate_task(&self) -> Result<()> {
        let (t, d, m) = (&self.train, &self.data, &self.model);
        if d.multi_label != (m.loss_func == LossFunc::BceLogit) {
            return Err(config_err(format!(
                "data.multi_label {} needs model.loss_func {}, got {}",
                d.multi_label,
                if d.multi_label {
                    LossFunc::BceLogit
                } else {
                    LossFunc::CrossEntropy
                },
                m.loss_func
            )));
        }
        let charades = t.dataset == DatasetKind::Charades;
        if d.multi_label != charades {
            return Err(config_err(format!(
                "train.dataset {} gives {} labels: set data.multi_label to {charades}",
                t.dataset,
                if charades { "multi-label" } else { "single" },
            )));
        }
        if d.path_prefix.contains('\0') {
            return Err(config_err("data.path_prefix contains a NUL byte"));
        }
        Ok(())
    }

    fn validate_model(&self) -> Result<()> {
        let m = &self.model;
        if ![18, 50, 101].contains(&m.depth) {
            return Err(config_err(format!(
                "model.depth must be 18, 50 or 101, got {}",
                m.depth
            )));
        }
        positive("model.width_per_group", m.width_per_group)?;
        positive("model.alpha", m.alpha)?;
        positive("model.beta_inv", m.beta_inv)?;
        positive(
            "model.fusion_conv_channel_ratio",
            m.fusion_conv_channel_ratio,
        )?;
        positive("model.fusion_kernel_sz", m.fusion_kernel_sz)?;
        positive("model.num_classes", m.num_classes)?;
        at_most("model.width_per_group", m.width_per_group, MAX_WIDTH)?;
        at_most("model.alpha", m.alpha, MAX_RATIO)?;
        at_most("model.beta_inv", m.beta_inv, MAX_RATIO)?;
        at_most(
            "model.fusion_conv_channel_ratio",
            m.fusion_conv_channel_ratio,
            MAX_RATIO,
        )?;
        at_most("model.fusion_kernel_sz", m.fusion_kernel_sz, MAX_KERNEL)?;
        at_most("model.num_classes", m.num_classes, MAX_CLASSES)?;
        if m.arch == Arch::SlowFast && m.width_per_group % m.beta_inv != 0 {
            return Err(config_err(format!(
                "model.width_per_group {} must divide by model.beta_inv {}",
                m.width_per_group, m.beta_inv
            )));
        }
        if !(0.0..1.0).contains(&m.dropout_rate) {
            return Err(config_err(format!(
                "model.dropout_rate must be in [0, 1), got {}",
                m.dropout_rate
            )));
        }
        self.validate_nonlocal()
    }

    /// `model.nonlocal_*`: empty, or 4 stages of one list per pathway; block indices inside
    /// their stage; positive groups and pools.
    fn validate_nonlocal(&self) -> Result<()> {
        let m = &self.model;
        let pathways = m.pathways();
        let shape = |key: &str, per_stage: Vec<usize>| {
            if per_stage.is_empty() {
                return Ok(());
            }
            if per_stage.len() != 4 || per_stage.iter().any(|&n| n != pathways) {
                return Err(config_err(format!(
                    "model.{key} must hold 4 stages (res2..res5) of {pathways} pathway entries \
                     for model.arch {}",
                    m.arch
                )));
            }
            Ok(())
        };
        let loc = &m.nonlocal_location;
        shape("nonlocal_location", loc.iter().map(Vec::len).collect())?;
        let group = &m.nonlocal_group;
        shape("nonlocal_group", group.iter().map(Vec::len).collect())?;
        let pool = &m.nonlocal_pool;
        shape("nonlocal_pool", pool.iter().map(Vec::len).collect())?;
        let blocks = m.stage_blocks();
        for (s, stage) in loc.iter().enumerate() {
            for &b in stage.iter().flatten() {
                if b >= blocks[s] {
                    return Err(config_err(format!(
                        "model.nonlocal_location: block {b} of res{} is past its {} blocks at \
                         model.depth {}",
                        s + 2,
                        blocks[s],
                        m.depth
                    )));
                }
            }
        }
        for &g in group.iter().flatten() {
            positive("model.nonlocal_group", g)?;
            at_most("model.nonlocal_group", g, MAX_FRAMES)?;
        }
        for &k in pool.iter().flatten().flatten() {
            positive("model.nonlocal_pool", k)?;
            at_most("model.nonlocal_pool", k, MAX_KERNEL)?;
        }
        Ok(())
    }

    fn validate_solver(&self) -> Result<()> {
        let s = &self.solver;
        finite_nonneg("solver.base_lr", s.base_lr)?;
        finite_nonneg("solver.warmup_epochs", s.warmup_epochs)?;
        finite_nonneg("solver.warmup_start_lr", s.warmup_start_lr)?;
        finite_nonneg("solver.cosine_end_lr", s.cosine_end_lr)?;
        finite_nonneg("solver.momentum", s.momentum)?;
        finite_nonneg("solver.dampening", s.dampening)?;
        finite_nonneg("solver.weight_decay", s.weight_decay)?;
        if !(s.gamma.is_finite() && s.gamma > 0.0) {
            return Err(config_err(format!(
                "solver.gamma must be a positive number, got {}",
                s.gamma
            )));
        }
        positive("solver.max_epoch", s.max_epoch)?;
        at_most("solver.max_epoch", s.max_epoch, MAX_EPOCHS)?;
        for (key, len) in [("solver.steps", s.steps.len()), ("solver.lrs", s.lrs.len())] {
            if len > MAX_LIST {
                return Err(config_err(format!(
                    "{key} has {len} entries; at most {MAX_LIST}"
                )));
            }
        }
        if let Some(&first) = s.steps.first() {
            if first != 0 {
                return Err(config_err(format!(
                    "solver.steps must start at 0, got {:?}",
                    s.steps
                )));
            }
        }
        if let Some(w) = s.steps.windows(2).find(|w| w[1] <= w[0]) {
            return Err(config_err(format!(
                "solver.steps must increase strictly, got {} after {} in {:?}",
                w[1], w[0], s.steps
            )));
        }
        if let Some(&last) = s.steps.last() {
            if s.max_epoch <= last {
                return Err(config_err(format!(
                    "solver.max_epoch ({}) must be beyond the last step ({last})",
                    s.max_epoch
                )));
            }
        }
        for (i, lr) in s.lrs.iter().enumerate() {
            finite_nonneg(&format!("solver.lrs[{i}]"), *lr)?;
        }
        let steps_policy = s.lr_policy != LrPolicy::Cosine;
        // The long cycle writes its own lrs; only their count must still agree if given.
        let lrs_needed = steps_policy && !self.multigrid.long_cycle;
        if steps_policy && s.steps.is_empty() {
            return Err(config_err(format!(
                "solver.steps is empty but solver.lr_policy is {:?}, which needs LR stages",
                s.lr_policy
            )));
        }
        if lrs_needed && s.lrs.len() < s.steps.len() {
            return Err(config_err(format!(
                "solver.lrs has {} entries but solver.steps has {}; every LR stage needs an LR",
                s.lrs.len(),
                s.steps.len()
            )));
        }
        if s.lr_policy == LrPolicy::Cosine && s.cosine_end_lr > s.base_lr {
            return Err(config_err(format!(
                "solver.cosine_end_lr ({}) must not exceed solver.base_lr ({})",
                s.cosine_end_lr, s.base_lr
            )));
        }
        Ok(())
    }

    fn validate_multigrid(&self) -> Result<()> {
        let m = &self.multigrid;
        if !(m.epoch_factor.is_finite() && m.epoch_factor > 0.0) {
            return Err(config_err(format!(
                "multigrid.epoch_factor must be > 0, got {}",
                m.epoch_factor
            )));
        }
        if m.epoch_factor > MAX_EPOCH_FACTOR {
            return Err(config_err(format!(
                "multigrid.epoch_factor must be at most {MAX_EPOCH_FACTOR}, got {}",
                m.epoch_factor
            )));
        }
        positive("multigrid.bn_base_size", m.bn_base_size)?;
        at_most_u64(
            "multigrid.bn_base_size",
            u64::from(m.bn_base_size),
            MAX_BATCH,
        )?;
        positive("multigrid.bn_sync_devices", m.bn_sync_devices)?;
        at_most_u64(
            "multigrid.bn_sync_devices",
            u64::from(m.bn_sync_devices),
            MAX_BATCH,
        )?;
        if m.long_cycle && m.bn_sync_devices > 1 {
            return Err(config_err(format!(
                "multigrid.bn_sync_devices = {} with multigrid.long_cycle: the long cycle sets \
                 the sync-BN groups of each stage from multigrid.bn_base_size (as PySlowFast's \
                 multigrid overrides BN.NUM_SYNC_DEVICES); leave it at 1",
                m.bn_sync_devices
            )));
        }
        if m.long_cycle_factors.len() > MAX_LIST {
            return Err(config_err(format!(
                "multigrid.long_cycle_factors has {} entries; at most {MAX_LIST}",
                m.long_cycle_factors.len()
            )));
        }
        positive("multigrid.eval_freq", m.eval_freq)?;
        let t0 = f64::from(self.data.num_frames);
        let s0 = f64::from(self.data.train_crop_size);
        if m.short_cycle {
            for (i, f) in m.short_cycle_factors.iter().enumerate() {
                let key = format!("multigrid.short_cycle_factors[{i}]");
                positive_factor(&key, *f)?;
                if round_half_even(s0 * f) < 1.0 {
                    return Err(config_err(format!(
                        "{key} = {f} rounds the crop size {s0} to 0"
                    )));
                }
            }
        }
        if m.long_cycle {
            if self.solver.steps.len() < 2 {
                return Err(config_err(format!(
                    "multigrid.long_cycle needs the baseline's LR stages in solver.steps (at least [0, s1]), got {:?}",
                    self.solver.steps
                )));
            }
            if m.long_cycle_factors.is_empty() {
                return Err(config_err("multigrid.long_cycle_factors is empty"));
            }
            for (i, [tf, sf]) in m.long_cycle_factors.iter().enumerate() {
                let key = format!("multigrid.long_cycle_factors[{i}]");
                positive_factor(&format!("{key}[0]"), *tf)?;
                positive_factor(&format!("{key}[1]"), *sf)?;
                let t = round_half_even(t0 * tf);
                let s = round_half_even(s0 * sf);
                if t < 1.0 {
                    return Err(config_err(format!(
                        "{key} = [{tf}, {sf}] rounds the frame count {t0} to 0"
                    )));
                }
                if s < 1.0 {
                    return Err(config_err(format!(
                        "{key} = [{tf}, {sf}] rounds the crop size {s0} to 0"
                    )));
                }
                if round_half_even(t0 * s0 * s0 / (t * s * s)) < 1.0 {
                    return Err(config_err(format!(
                        "{key} = [{tf}, {sf}] makes a shape larger than the default, so its relative batch rounds to 0"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Python's `round()`: half to even. The K400 schedule ends at round(358.5) = 358.
pub(crate) fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

fn positive(key: &str, v: u32) -> Result<()> {
    if v == 0 {
        return Err(config_err(format!("{key} must be > 0, got 0")));
    }
    Ok(())
}

fn at_most(key: &str, v: u32, max: u32) -> Result<()> {
    at_most_u64(key, u64::from(v), u64::from(max))
}

fn at_most_u64(key: &str, v: u64, max: u64) -> Result<()> {
    if v > max {
        return Err(config_err(format!("{key} must be at most {max}, got {v}")));
    }
    Ok(())
}

fn positive_factor(key: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(config_err(format!("{key} must be > 0, got {v}")));
    }
    Ok(())
}

fn finite_nonneg(key: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(config_err(format!(
            "{key} must be a finite number >= 0, got {v}"
        )));
    }
    Ok(())
}
