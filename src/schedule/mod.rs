//! The Multigrid schedule: a pure function of the config (spec 1.2-1.7, 1.13-1.15).
//!
//! It answers everything that depends on the epoch alone: the long-cycle stage and its base
//! shape, the short-cycle batch factors and crops, the LR at any fractional epoch, the BN
//! grouping and the eval/checkpoint epochs. What depends on the dataset, world size and seed
//! lives in [`crate::plan`].

pub mod choices;
pub mod config;
mod long_cycle;
mod lr;
pub mod pyslowfast;

use serde::Serialize;

pub use choices::{
    Arch, CudnnBenchmark, DatasetKind, DeviceChoice, DistBackend, EnsembleMethod, HeadAct,
    InitMethod, LossFunc, MemoryFormat, NonlocalInstantiation, PrecisionChoice, ValProtocol,
};
pub use config::{
    Config, DataConfig, LrPolicy, ModelConfig, MultigridConfig, RunConfig, SolverConfig,
    TrainConfig,
};

use crate::error::{Error, Result};
use config::round_half_even;

/// Which cycles are on (spec 1.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Baseline,
    ShortCycle,
    LongCycle,
    LongShortCycle,
}

impl Mode {
    pub fn long_cycle(self) -> bool {
        matches!(self, Mode::LongCycle | Mode::LongShortCycle)
    }
    pub fn short_cycle(self) -> bool {
        matches!(self, Mode::ShortCycle | Mode::LongShortCycle)
    }
}

/// One entry of the stage table: epochs [previous end, `end_epoch`) at base shape
/// (`batch_factor` x B0 clips, `num_frames`, `crop_size`). Without the long cycle there is one
/// stage at the default shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// Index of the baseline LR stage this entry belongs to; the fine-tune entry has K.
    pub lr_stage: u32,
    /// Global batch relative to B0 (8, 4, 2, 1 by default).
    pub batch_factor: u32,
    pub num_frames: u32,
    pub crop_size: u32,
    pub end_epoch: u32,
}

/// How BatchNorm statistics are grouped for one stage (spec 1.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BnGrouping {
    /// Statistics groups per rank's batch (SubBatchNorm splits); 1 = plain BN.
    pub groups: u32,
    /// Ranks whose statistics are pooled (sync BN); 1 = none.
    pub sync_ranks: u32,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    config: Config,
    mode: Mode,
    stages: Vec<Stage>,
    steps: Vec<u32>,
    lrs: Vec<f64>,
    max_epoch: u32,
}

impl Schedule {
    /// Validates the config and derives the schedule.
    pub fn new(config: Config) -> Result<Schedule> {
        config.validate()?;
        let mg = &config.multigrid;
        let mode = match (mg.long_cycle, mg.short_cycle) {
            (true, true) => Mode::LongShortCycle,
            (true, false) => Mode::LongCycle,
            (false, true) => Mode::ShortCycle,
            (false, false) => Mode::Baseline,
        };
        let s = &config.solver;
        let (stages, steps, lrs, max_epoch) = match mode {
            Mode::LongCycle | Mode::LongShortCycle => long_cycle::build(&config),
            Mode::ShortCycle => {
                // init_multigrid: int() truncation of steps and max_epoch times epoch_factor.
                let scale = |e: u32| (f64::from(e) * mg.epoch_factor) as u32;
                let steps: Vec<u32> = s.steps.iter().map(|&e| scale(e)).collect();
                let max_epoch = scale(s.max_epoch);
                (
                    vec![default_stage(&config, max_epoch)],
                    steps,
                    s.lrs.clone(),
                    max_epoch,
                )
            }
            Mode::Baseline => (
                vec![default_stage(&config, s.max_epoch)],
                s.steps.clone(),
                s.lrs.clone(),
                s.max_epoch,
            ),
        };
        if max_epoch == 0 {
            return Err(Error::Config(format!(
                "solver.max_epoch {} x multigrid.epoch_factor {} leaves no epoch to train",
                s.max_epoch, mg.epoch_factor
            )));
        }
        if max_epoch > config::limits::MAX_EPOCHS {
            return Err(Error::Config(format!(
                "solver.max_epoch {} x multigrid.epoch_factor {} makes {max_epoch} epochs; at \
                 most {}",
                s.max_epoch,
                mg.epoch_factor,
                config::limits::MAX_EPOCHS
            )));
        }
        let schedule = Schedule {
            config,
            mode,
            stages,
            steps,
            lrs,
            max_epoch,
        };
        schedule.check_batch_sizes()?;
        Ok(schedule)
    }

    /// Every step's clip count (train.batch_size x the long cycle's x the short cycle's factor)
    /// within `limits::MAX_BATCH`: very small long-cycle factors make batches of billions.
    fn check_batch_sizes(&self) -> Result<()> {
        let b0 = u64::from(self.config.train.batch_size);
        for (i, stage) in self.stages.iter().enumerate() {
            let factors = self.short_cycle_batch_factors(i);
            if factors.contains(&0) {
                return Err(Error::Config(format!(
                    "stage {i} ({}px) is smaller than the short cycle's crops {:?}, so a \
                     short-cycle batch factor rounds to 0: multigrid.short_cycle_factors must \
                     give crops below every stage's",
                    stage.crop_size,
                    self.short_cycle_crops(i)
                )));
            }
            let short = factors.into_iter().max().unwrap_or(1);
            let clips = b0
                .saturating_mul(u64::from(stage.batch_factor))
                .saturating_mul(u64::from(short));
            if clips > config::limits::MAX_BATCH {
                return Err(Error::Config(format!(
                    "stage {i} ({} frames at {}px) would take {clips} clips a step \
                     (train.batch_size {b0} x {} x {short} from multigrid.long_cycle_factors \
                     and multigrid.short_cycle_factors); at most {}",
                    stage.num_frames,
                    stage.crop_size,
                    stage.batch_factor,
                    config::limits::MAX_BATCH
                )));
            }
        }
        Ok(())
    }

    pub fn from_json(text: &str) -> Result<Schedule> {
        Schedule::new(Config::from_json(text)?)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn mode(&self) -> Mode {
        self.mode
    }
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }
    /// The solver's LR-stage boundaries after the multigrid overrides.
    pub fn steps(&self) -> &[u32] {
        &self.steps
    }
    /// The solver's LR per entry of [`Schedule::steps`] (relative or absolute, by policy).
    pub fn lrs(&self) -> &[f64] {
        &self.lrs
    }
    /// Training epochs after the multigrid overrides.
    pub fn max_epoch(&self) -> u32 {
        self.max_epoch
    }

    /// First epoch of stage `index`.
    pub fn stage_start(&self, index: usize) -> u32 {
        if index == 0 {
            0
        } else {
            self.stages[index - 1].end_epoch
        }
    }

    /// The stage that trains epoch `epoch`: the first whose end lies beyond it, else the last
    /// (PySlowFast's `get_current_long_cycle_shape`). Zero-length stages are never chosen.
    pub fn stage_index_at(&self, epoch: u32) -> usize {
        let i = self.stages.partition_point(|s| s.end_epoch <= epoch);
        i.min(self.stages.len() - 1)
    }

    /// LR at a fractional epoch, warm-up included (PySlowFast's `get_lr_at_epoch`). Past the
    /// last epoch the last LR holds. Errors: a negative or non-finite epoch.
    pub fn lr_at(&self, epoch: f64) -> Result<f64> {
        check_epoch(epoch)?;
        Ok(lr::lr_at(self, epoch))
    }

    /// LR of the policy at an epoch, without the warm-up. Errors as [`Schedule::lr_at`].
    pub fn policy_lr_at(&self, epoch: f64) -> Result<f64> {
        check_epoch(epoch)?;
        Ok(lr::policy_lr(self, epoch))
    }

    /// `lr_at` for an epoch the plan computed itself (finite and >= 0).
    pub(crate) fn lr_at_valid(&self, epoch: f64) -> f64 {
        lr::lr_at(self, epoch)
    }

    /// The same config with both cycles off: the baseline this schedule is compared against.
    pub fn baseline(&self) -> Result<Schedule> {
        let mut config = self.config.clone();
        config.multigrid.long_cycle = false;
        config.multigrid.short_cycle = false;
        Schedule::new(config)
    }

    /// Multiples of the stage's per-rank base batch for short-cycle phases 0, 1, 2 (spec 1.7),
    /// computed from the stage's crop as PySlowFast does; `[1]` without the short cycle.
    pub fn short_cycle_batch_factors(&self, stage: usize) -> Vec<u32> {
        if !self.mode.short_cycle() {
            return vec![1];
        }
        let s0 = f64::from(self.config.data.train_crop_size);
        let s_cur = f64::from(self.stages[stage].crop_size);
        let mut f: Vec<u32> = self
            .config
            .multigrid
            .short_cycle_factors
            .iter()
            .map(|&f| round_half_even((s_cur / (f * s0)).powf(2.0)) as u32)
            .collect();
        f.push(1);
        f
    }

    /// Crop size of each short-cycle phase (spec 1.8); the stage crop alone without it.
    pub fn short_cycle_crops(&self, stage: usize) -> Vec<u32> {
        let s_cur = self.stages[stage].crop_size;
        if !self.mode.short_cycle() {
            return vec![s_cur];
        }
        let s0 = f64::from(self.config.data.train_crop_size);
        let mut c: Vec<u32> = self
            .config
            .multigrid
            .short_cycle_factors
            .iter()
            .map(|&f| round_half_even(f * s0) as u32)
            .collect();
        c.push(s_cur);
        c
    }

    /// Short-side resize range for a training crop: with multigrid on, the lower bound scales
    /// with crop / S0 and the upper bound stays (spec 1.8).
    pub fn jitter_scales(&self, crop: u32) -> [u32; 2] {
        let [lo, hi] = self.config.data.train_jitter_scales;
        if self.mode == Mode::Baseline {
            return [lo, hi];
        }
        let s0 = f64::from(self.config.data.train_crop_size);
        let lo = round_half_even(f64::from(lo) * f64::from(crop) / s0) as u32;
        [lo, hi]
    }

    /// Temporal stride range [min, max] of a stage (spec 1.9).
    pub fn sampling_rate_range(&self, stage: usize) -> [u32; 2] {
        let r = self.config.data.sampling_rate;
        if !self.mode.long_cycle() {
            return [r, r];
        }
        let t0 = self.config.data.num_frames;
        [r, r * (t0 / self.stages[stage].num_frames).max(1)]
    }

    /// BN grouping of a stage for a world of `world_size` ranks (spec 1.10), in every mode: a
    /// rank whose base batch holds f = batch / ranks / `bn_base_size` > 1 groups normalises in
    /// int(f) groups, so one device reproduces the recipe's per-GPU BN (PySlowFast normalises
    /// a baseline's whole per-GPU batch, which only equals the recipe on 8 GPUs). Short-cycle
    /// phases keep the stage's group count, as PySlowFast's SubBatchNorm3d does. A rank with
    /// f < 1 pools its statistics with int(1 / f) consecutive ranks: with the long cycle as
    /// PySlowFast's multigrid does, otherwise at most `multigrid.bn_sync_devices` of them
    /// (PySlowFast's sync_batchnorm; 1 by default, no sync).
    pub fn bn_grouping(&self, stage: usize, world_size: u32) -> BnGrouping {
        let global =
            u64::from(self.stages[stage].batch_factor) * u64::from(self.config.train.batch_size);
        self.bn_grouping_of(global, world_size)
    }

    /// BN grouping of a base-shape batch of `global` clips over `world_size` ranks.
    pub fn bn_grouping_of(&self, global: u64, world_size: u32) -> BnGrouping {
        if world_size == 0 {
            return BnGrouping {
                groups: 1,
                sync_ranks: 1,
            };
        }
        let f =
            (global as f64 / f64::from(world_size)) / f64::from(self.config.multigrid.bn_base_size);
        if f > 1.0 {
            BnGrouping {
                groups: f as u32,
                sync_ranks: 1,
            }
        } else if f < 1.0 {
            let most = if self.mode.long_cycle() {
                u32::MAX
            } else {
                self.config.multigrid.bn_sync_devices
            };
            BnGrouping {
                groups: 1,
                sync_ranks: ((1.0 / f) as u32).clamp(1, most),
            }
        } else {
            BnGrouping {
                groups: 1,
                sync_ranks: 1,
            }
        }
    }

    /// Whether evaluation runs after (0-based) epoch `epoch` (spec 1.13).
    pub fn is_eval_epoch(&self, epoch: u32) -> bool {
        self.periodic_epoch(epoch, self.config.train.eval_period)
    }

    /// Whether a checkpoint is written after epoch `epoch`; the same rule as evaluation with
    /// the long cycle, `train.checkpoint_period` otherwise.
    pub fn is_checkpoint_epoch(&self, epoch: u32) -> bool {
        self.periodic_epoch(epoch, self.config.train.checkpoint_period)
    }

    /// All eval epochs in order.
    pub fn eval_epochs(&self) -> Vec<u32> {
        (0..self.max_epoch)
            .filter(|&e| self.is_eval_epoch(e))
            .collect()
    }

    fn periodic_epoch(&self, epoch: u32, period: u32) -> bool {
        // Any u32 may come through the C API: past the run there is nothing to evaluate.
        if epoch >= self.max_epoch {
            return false;
        }
        if epoch + 1 == self.max_epoch {
            return true;
        }
        if self.mode.long_cycle() {
            let mut prev = 0;
            for s in &self.stages {
                if epoch < s.end_epoch {
                    let period =
                        ((s.end_epoch - prev) / self.config.multigrid.eval_freq + 1).max(1);
                    return (s.end_epoch - 1 - epoch) % period == 0;
                }
                prev = s.end_epoch;
            }
        }
        (epoch + 1) % period == 0
    }
}

fn default_stage(config: &Config, end_epoch: u32) -> Stage {
    Stage {
        lr_stage: 0,
        batch_factor: 1,
        num_frames: config.data.num_frames,
        crop_size: config.data.train_crop_size,
        end_epoch,
    }
}

fn check_epoch(epoch: f64) -> Result<()> {
    if !(epoch.is_finite() && epoch >= 0.0) {
        return Err(Error::InvalidArgument(format!(
            "epoch must be a finite number >= 0, got {epoch}"
        )));
    }
    Ok(())
}
