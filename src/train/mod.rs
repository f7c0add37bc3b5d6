//! The multigrid trainer: one model (SlowFast, or a single-pathway ResNet) for the whole run; each plan step brings its own
//! shape, LR and BN group count, and nothing is rebuilt when they change.

pub mod amp;
pub mod checkpoint;
pub mod cudnn;
mod distributed;
mod eval;
mod fit;
pub mod grads;
pub mod graphs;
pub mod map;
pub mod metrics;
pub mod optim;
mod precise_bn;
pub mod pretrained;
mod resume;
mod stage;
mod step;
mod warmup;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tch::{nn, Device, Tensor};

use crate::data::frame_list::FrameLists;
use crate::data::Dataset;
use crate::distributed::{self as dist, Collective, DistOptions, Launch};
use crate::error::{Error, Result};
use crate::model::Network;
use crate::plan::Plan;
use crate::schedule::{
    Arch, Config, CudnnBenchmark, DatasetKind, DeviceChoice, MemoryFormat, Schedule,
};
use amp::{LossScaler, Precision};
use grads::GradBuckets;
use metrics::Metrics;
use optim::Sgd;

// Only for step.rs and distributed.rs, which still map with it: `?` through `From` is the
// one conversion.

fn loss_value(loss: &Tensor, step: u64) -> Result<f64> {
    let v = loss.f_double_value(&[])?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Error::InvalidArgument(format!(
            "loss is {v} at step {step}"
        )))
    }
}

/// Fails before any training when a planned frame count does not suit the network. SlowFast:
/// the slow pathway takes T / alpha frames and the lateral fusion conv (temporal stride alpha)
/// yields ceil(T / alpha), so both agree only when alpha divides T. C2D and I3D halve T after
/// res2, so they need 2 frames. PySlowFast finds out mid-run.
fn check_model_fits_schedule(schedule: &Schedule) -> Result<()> {
    let model = &schedule.config().model;
    let alpha = model.alpha;
    let t0 = schedule.config().data.num_frames;
    if model.arch != Arch::SlowFast {
        let least = if model.arch == Arch::Slow { 1 } else { 2 };
        let planned = schedule.stages().iter().map(|s| s.num_frames);
        return match planned.chain([t0]).find(|&t| t < least) {
            Some(t) => Err(Error::Config(format!(
                "the schedule uses {t} frames, fewer than the {least} that model.arch {} pools \
                 to 1 after res2",
                model.arch
            ))),
            None => Ok(()),
        };
    }
    let planned = schedule
        .stages()
        .iter()
        .enumerate()
        .map(|(i, s)| (Some(i), s.num_frames));
    for (stage, t) in planned.chain([(None, t0)]) {
        if t < alpha || t % alpha != 0 {
            let at = stage.map_or("evaluation (data.num_frames)".into(), |i| {
                format!("stage {i} of the schedule")
            });
            return Err(Error::Config(format!(
                "{at} uses {t} frames, which model.alpha {alpha} does not divide: the slow pathway would get {} frames and the lateral fusion {}",
                t / alpha,
                t.div_ceil(alpha)
            )));
        }
    }
    Ok(())
}

/// Fails before any training when a stage needs BN synchronised over more ranks than the job
/// groups evenly: sync BN pools statistics over groups of consecutive ranks on one machine
/// (spec 1.10: NUM_SYNC_DEVICES = int(1 / f)), so the group size must divide the ranks per
/// machine, as PySlowFast asserts.
fn check_world_fits_schedule(schedule: &Schedule, launch: &Launch) -> Result<()> {
    let world = launch.world_size;
    if world <= 1 {
        return Ok(());
    }
    for i in 0..schedule.stages().len() {
        let sync = schedule.bn_grouping(i, world as u32).sync_ranks as usize;
        if sync > 1 && (launch.local_world_size % sync != 0 || world % sync != 0) {
            return Err(Error::Config(format!(
                "stage {i} needs BN synchronised over {sync} ranks (its per-rank batch is below \
                 multigrid.bn_base_size {}; multigrid.bn_sync_devices {}), which {} ranks per \
                 machine ({world} in all) do not group evenly: change the number of ranks, \
                 multigrid.bn_base_size or multigrid.bn_sync_devices",
                schedule.config().multigrid.bn_base_size,
                schedule.config().multigrid.bn_sync_devices,
                launch.local_world_size
            )));
        }
    }
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The run section's distributed settings; ranks and sizes come from the environment.
pub fn dist_options(run: &crate::schedule::RunConfig) -> Result<DistOptions> {
    Ok(DistOptions {
        backend: run.dist_backend,
        init_method: run.dist_init_method.to_string(),
        timeout: std::time::Duration::from_secs_f64(run.dist_timeout_s),
        ..DistOptions::default()
    })
}

/// The device `run.device` names: `auto` is CUDA when present; `cuda` and `cuda:N` must exist.
pub fn parse_device(choice: DeviceChoice) -> Result<Device> {
    let cuda = |n: usize| {
        if tch::Cuda::is_available() && n < tch::Cuda::device_count() as usize {
            Ok(Device::Cuda(n))
        } else {
            Err(Error::CudaUnavailable(format!(
                "device {choice} requested but CUDA is not available ({} devices)",
                tch::Cuda::device_count()
            )))
        }
    };
    match choice {
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(n) => cuda(n.unwrap_or(0)),
    }
}

/// Opens `split` of `run.data_dir` as `train.dataset` says: for Kinetics the clip store
/// `split.mgstore` when present, else the frame store `split.mgframes`, else the video list
/// `split.csv`; for Charades and SSv2 their frame lists (val and
/// test both read `val.csv`, as in PySlowFast), with `data.path_prefix`.
pub fn open_split(config: &Config, split: &str) -> Result<Dataset> {
    let dir = Path::new(&config.run.data_dir);
    let prefix = &config.data.path_prefix;
    match config.train.dataset {
        DatasetKind::Charades => Ok(Dataset::FrameLists(FrameLists::charades(
            dir, split, prefix,
        )?)),
        DatasetKind::Ssv2 => Ok(Dataset::FrameLists(FrameLists::ssv2(dir, split, prefix)?)),
        DatasetKind::Kinetics => {
            let stores = [
                dir.join(format!("{split}.mgstore")),
                dir.join(format!("{split}.mgframes")),
            ];
            match stores.into_iter().find(|p| p.exists()) {
                Some(store) => Dataset::store(store),
                None => Dataset::video_list(dir, split),
            }
        }
    }
}

/// [`open_split`] for a split that may be absent: None when the split's files do not exist,
/// an error when they exist but cannot be read (a corrupt store, a bad list), which a run
/// must report rather than skip.
pub fn find_split(config: &Config, split: &str) -> Result<Option<Dataset>> {
    let dir = Path::new(&config.run.data_dir);
    let present = match config.train.dataset {
        DatasetKind::Charades | DatasetKind::Ssv2 => {
            crate::data::frame_list::split_exists(dir, split)
        }
        DatasetKind::Kinetics => ["mgstore", "mgframes", "csv"]
            .map(|ext| format!("{split}.{ext}"))
            .iter()
            .any(|f| dir.join(f).exists()),
    };
    if present {
        open_split(config, split).map(Some)
    } else {
        Ok(None)
    }
}

/// Top-1 and top-5 accuracy in percent; for a multi-label task (`data.multi_label`) the share
/// of clips whose top-1 (top-5) scores include one of their classes, and `map`, the mean
/// average precision in percent (PySlowFast's Charades metric).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accuracy {
    pub top1: f64,
    pub top5: f64,
    pub clips: usize,
    pub map: Option<f64>,
}

/// What a progress callback sees after each step.
#[derive(Debug, Clone)]
pub struct Progress {
    pub step: u64,
    pub total_steps: u64,
    pub epoch: u32,
    /// Long-cycle stage and this rank's batch shape at this step.
    pub stage: u32,
    pub batch_size: u32,
    pub num_frames: u32,
    pub crop_size: u32,
    /// This rank's loss at the latest log point (read from the device every `run.log_period`
    /// steps, at evaluations and checkpoints, and at the fit's first and last step).
    pub loss: f64,
    pub lr: f64,
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub wall_seconds: f64,
    pub steps: u64,
    pub clips_seen: u64,
    pub final_val: Option<Accuracy>,
    pub test: Option<Accuracy>,
    /// Stopped before the end of the plan, after writing a checkpoint: by the progress
    /// callback, or by a preemption notice.
    pub cancelled: bool,
    /// The preemption notice (SIGTERM, SIGUSR1; see [`crate::distributed::signals`]) that stopped the
    /// run, when one did.
    pub preempted: Option<i32>,
}

pub struct Trainer {
    config: Config,
    schedule: Schedule,
    device: Device,
    vs: nn::VarStore,
    model: Network,
    opt: Sgd,
    out_dir: PathBuf,
    metrics: Metrics,
    train: Arc<Dataset>,
    plan: Arc<Plan>,
    next_step: u64,
    clips_seen: u64,
    /// Wall time of the run before `clock` started (a resumed run's checkpoint).
    wall_before: f64,
    /// Started with the trainer, restarted when a checkpoint is loaded.
    clock: Instant,
    precision: Precision,
    /// Present with fp16.
    scaler: Option<LossScaler>,
    warmed_up: bool,
    /// What the BN statistics were last recomputed for by precise BN; cleared by a training
    /// step.
    precise_at: Option<precise_bn::Serving>,
    /// Seconds spent in precise BN since the trainer was made, wherever it ran.
    precise_seconds: f64,
    /// The other ranks (a no-op with one process).
    comm: Box<dyn Collective>,
    launch: Launch,
    /// Whether a checkpoint was loaded to go on from (`run.auto_resume`, [`Trainer::resume`],
    /// [`Trainer::load_checkpoint`]).
    resumed: bool,
    /// This rank's sync-BN groups, made at start.
    sync_bn_groups: Vec<Vec<usize>>,
    /// Every parameter's gradient, as views into flat buckets (all-reduced as they are).
    grads: GradBuckets,
    /// Seconds the host spent after backward waiting for the gradients' all-reduce: the
    /// communication the step did not hide (on CUDA, the time to queue it).
    grad_reduce_seconds: f64,
    /// CUDA graphs per shape (`run.cuda_graphs`), where the run can use them.
    graphs: Option<graphs::StepGraphs>,
    /// Per shape, whether cudnn.benchmark is on (`run.cudnn_benchmark = "auto"`, decided at
    /// warm-up).
    cudnn: Option<cudnn::CudnnPlan>,
    /// What the last `init_from` loaded (the C API reads it with mg_trainer_init_report).
    init_report: Option<checkpoint::InitReport>,
}

impl Trainer {
    /// Builds the model and opens `run.data_dir`'s train split; writes under `out_dir`. With
    /// a launcher's environment (torchrun, mpirun, srun) this process joins that job as one
    /// rank; see [`Trainer::with_dist`].
    pub fn new(config: Config, out_dir: &Path) -> Result<Trainer> {
        let options = dist_options(&config.run)?;
        Trainer::with_dist(config, out_dir, &options)
    }

    /// `new` with explicit distributed settings: fields left `None` come from the launcher's
    /// environment. Every rank builds the same model, rank 0's parameters and buffers are
    /// broadcast, and only rank 0 writes metrics and checkpoints.
    pub fn with_dist(config: Config, out_dir: &Path, options: &DistOptions) -> Result<Trainer> {
        let schedule = Schedule::new(config.clone())?;
        let launch = options.resolve()?;
        let device = dist::rank_device(parse_device(config.run.device)?, &launch);
        let precision = Precision::resolve(config.run.precision, device)?;
        check_model_fits_schedule(&schedule)?;
        check_world_fits_schedule(&schedule, &launch)?;
        if device == Device::Cpu {
            if let Some(n) = launch.cpu_threads(num_cpus()) {
                tch::set_num_threads(n as i32);
            }
        }
        let mut comm = dist::connect(options, &launch, device)?;
        // Every rank learns whether every rank has the data before the plan, which needs it.
        let train = distributed::agree_on(
            comm.as_mut(),
            open_split(&config, "train"),
            "open the train split",
        )?;
        let train = Arc::new(train);
        let plan = Arc::new(Plan::new(
            &schedule,
            train.len() as u64,
            launch.world_size as u32,
            launch.rank as u32,
            config.run.seed,
        )?);
        if device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(config.run.cudnn_benchmark == CudnnBenchmark::On);
        }
        // Each rank draws its own initial weights (rank 0 the single-process ones); the
        // broadcast below replaces them with rank 0's, so a broadcast that did nothing could
        // not pass as one that worked.
        let rank_salt = (launch.rank as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        tch::manual_seed((config.run.seed ^ rank_salt) as i64 & i64::MAX);
        let vs = nn::VarStore::new(device);
        let mut model = Network::new(&vs.root(), &config.model)?;
        model.set_channels_last(config.run.memory_format == MemoryFormat::ChannelsLast3d)?;
        // After the layout is set: every gradient takes its parameter's strides.
        let grads = GradBuckets::new(&vs, dist::FIRST_BUCKET_BYTES, dist::BUCKET_BYTES)?;
        let opt = Sgd::new(&vs, &config.solver);
        let opened = if launch.rank == 0 {
            std::fs::create_dir_all(out_dir)
                .map_err(|source| Error::Io {
                    path: out_dir.to_path_buf(),
                    source,
                })
                .and_then(|_| Metrics::open(&out_dir.join("metrics.jsonl")))
        } else {
            Ok(Metrics::discard())
        };
        // Rank 0 may fail to open its outputs: the trainer starts anyway so that every rank
        // learns of it (`agree`) before the first broadcast.
        let (metrics, opened) = match opened {
            Ok(m) => (m, Ok(())),
            Err(e) => (Metrics::discard(), Err(e)),
        };
        let mut trainer = Trainer {
            config,
            schedule,
            device,
            vs,
            model,
            opt,
            out_dir: out_dir.to_path_buf(),
            metrics,
            train,
            plan,
            next_step: 0,
            clips_seen: 0,
            wall_before: 0.0,
            clock: Instant::now(),
            precision,
            scaler: (precision == Precision::Fp16).then(LossScaler::default),
            warmed_up: false,
            precise_at: None,
            precise_seconds: 0.0,
            comm,
            launch,
            resumed: false,
            sync_bn_groups: Vec::new(),
            grads,
            grad_reduce_seconds: 0.0,
            graphs: None,
            cudnn: None,
            init_report: None,
        };
        trainer.agree(opened, "open its output directory")?;
        trainer.check_ranks_agree()?;
        trainer.sync_bn_groups = trainer.create_sync_bn_groups()?;
        trainer.sync_from_rank0()?;
        if trainer.config.run.cuda_graphs {
            let fp16 = trainer.scaler.is_some();
            match graphs::unsupported(trainer.device, fp16, trainer.distributed()) {
                Some(reason) => eprintln!("multigrid: warning: {reason}; steps run eagerly"),
                None => trainer.graphs = Some(graphs::StepGraphs::new(trainer.device)?),
            }
        }
        Ok(trainer)
    }

    /// This process's rank and the number of ranks.
    pub fn rank(&self) -> usize {
        self.launch.rank
    }
    pub fn world_size(&self) -> usize {
        self.launch.world_size
    }
    /// `none`, `mpi` or `nccl`.
    pub fn backend(&self) -> &'static str {
        self.comm.backend()
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }
    pub fn device(&self) -> Device {
        self.device
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn next_step(&self) -> u64 {
        self.next_step
    }
    /// The sync-BN groups this rank belongs to (made at start; empty when no stage needs a
    /// group smaller than the world).
    pub fn sync_bn_groups(&self) -> &[Vec<usize>] {
        &self.sync_bn_groups
    }
    /// Seconds spent after backward waiting for the gradients' all-reduce, over every step of
    /// this trainer: the communication backward did not hide (`run.overlap_grad_reduce`).
    pub fn grad_reduce_seconds(&self) -> f64 {
        self.grad_reduce_seconds
    }
    /// How many (shape, BN groups) have a captured CUDA graph, and why graphs are off when
    /// `run.cuda_graphs` asked for them and they are not (or stopped) serving.
    pub fn cuda_graphs(&self) -> (usize, Option<String>) {
        match &self.graphs {
            Some(g) => (g.captured(), g.disabled.clone()),
            None if self.config.run.cuda_graphs => {
                let fp16 = self.scaler.is_some();
                (
                    0,
                    graphs::unsupported(self.device, fp16, self.distributed()),
                )
            }
            None => (0, None),
        }
    }
    /// What `run.cudnn_benchmark = "auto"` decided at warm-up (None before, or with another
    /// setting).
    pub fn cudnn_plan(&self) -> Option<&cudnn::CudnnPlan> {
        self.cudnn.as_ref()
    }
    /// Whether this trainer goes on from a checkpoint it loaded.
    pub fn resumed(&self) -> bool {
        self.resumed
    }
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    pub fn last_metrics(&self) -> &serde_json::Value {
        &self.metrics.last
    }
}
