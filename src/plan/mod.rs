//! The per-step plan: what only the run knows (dataset size, world size, rank, seed) added to
//! the schedule, answered for any global step without walking the steps before it.
//!
//! Sampling follows PySlowFast's training loader: per epoch a seeded permutation of the
//! dataset, padded to a multiple of the world size and strided over ranks like torch's
//! DistributedSampler; on each rank the short-cycle batch sampler cuts the shard into batches
//! of phases 0, 1, 2, 0, ... from the start of every epoch and drops a trailing partial batch.
//! Every rank has the same shard length, so every rank sees the same shape at the same step.

mod sampler;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::schedule::config::limits::MAX_DATASET;
use crate::schedule::Schedule;
use sampler::Permutation;

/// Everything a trainer needs for one global step of one rank.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub step: u64,
    pub epoch: u32,
    /// Iteration within the epoch.
    pub iteration: u64,
    pub iterations_in_epoch: u64,
    /// Index into the schedule's stage table.
    pub stage: u32,
    /// 0, 1, 2 with the short cycle (smallest crop, largest batch first); always 0 without.
    pub short_cycle_phase: u32,
    /// Clips on this rank.
    pub batch_size: u32,
    /// Clips over all ranks.
    pub global_batch_size: u64,
    pub num_frames: u32,
    pub crop_size: u32,
    /// Temporal stride range, both ends inclusive (spec 1.9).
    pub sampling_rate_min: u32,
    pub sampling_rate_max: u32,
    /// Short-side resize range for training jitter at this crop (spec 1.8).
    pub jitter_min: u32,
    pub jitter_max: u32,
    /// BatchNorm statistics groups within this rank's batch (spec 1.10).
    pub bn_groups: u32,
    /// Ranks that pool BN statistics (sync BN) when the per-rank batch is below the base size.
    pub bn_sync_ranks: u32,
    pub lr: f64,
    /// This is the last step of an epoch after which PySlowFast evaluates / checkpoints.
    pub eval_after: bool,
    pub checkpoint_after: bool,
}

/// Per-stage batch layout on one rank.
#[derive(Debug, Clone)]
struct StageLayout {
    /// Per-rank batch of each short-cycle phase.
    batch_sizes: Vec<u32>,
    /// prefix[p] = clips consumed by phases 0..p within one cycle; prefix[len] = cycle length.
    prefix: Vec<u64>,
    iterations_per_epoch: u64,
}

#[derive(Debug, Clone)]
pub struct Plan {
    schedule: Schedule,
    dataset_size: u64,
    world_size: u32,
    rank: u32,
    seed: u64,
    shard_len: u64,
    layouts: Vec<StageLayout>,
    /// epoch_start[e] = first global step of epoch e; epoch_start[max_epoch] = total steps.
    epoch_start: Vec<u64>,
}

impl Plan {
    /// What [`Plan::new`] requires of the world size, for a caller with no dataset yet (the
    /// CLI's `plan` without `--dataset-size`): above 0, and dividing `train.batch_size`.
    pub fn check_world_size(schedule: &Schedule, world_size: u32) -> Result<()> {
        if world_size == 0 {
            return Err(Error::InvalidArgument("world_size must be > 0".into()));
        }
        let b0 = schedule.config().train.batch_size;
        if b0 % world_size != 0 {
            return Err(Error::InvalidArgument(format!(
                "train.batch_size {b0} does not divide by world_size {world_size}"
            )));
        }
        Ok(())
    }

    pub fn new(
        schedule: &Schedule,
        dataset_size: u64,
        world_size: u32,
        rank: u32,
        seed: u64,
    ) -> Result<Plan> {
        if dataset_size == 0 {
            return Err(Error::InvalidArgument("dataset_size must be > 0".into()));
        }
        if dataset_size > MAX_DATASET {
            return Err(Error::InvalidArgument(format!(
                "dataset_size {dataset_size} is above the limit of {MAX_DATASET} clips"
            )));
        }
        Plan::check_world_size(schedule, world_size)?;
        if rank >= world_size {
            return Err(Error::InvalidArgument(format!(
                "rank {rank} is not below world_size {world_size}"
            )));
        }
        let b0 = schedule.config().train.batch_size;
        let shard_len = dataset_size.div_ceil(u64::from(world_size));
        let mut layouts = Vec::with_capacity(schedule.stages().len());
        for (i, stage) in schedule.stages().iter().enumerate() {
            // The schedule bounds every stage's batch, so these products fit.
            let base = stage.batch_factor * (b0 / world_size);
            let bn = schedule.bn_grouping(i, world_size);
            if base % bn.groups != 0 {
                return Err(Error::InvalidArgument(format!(
                    "stage {i}: per-rank batch {base} does not divide into {} BN groups \
                     (multigrid.bn_base_size {}); choose a batch or base size that divides",
                    bn.groups,
                    schedule.config().multigrid.bn_base_size
                )));
            }
            let batch_sizes: Vec<u32> = schedule
                .short_cycle_batch_factors(i)
                .iter()
                .map(|f| f * base)
                .collect();
            let mut prefix = vec![0u64];
            for b in &batch_sizes {
                prefix.push(prefix[prefix.len() - 1] + u64::from(*b));
            }
            let cycle = prefix[batch_sizes.len()];
            let rem = shard_len % cycle;
            let extra = prefix[1..].iter().filter(|&&p| p <= rem).count() as u64;
            let iterations_per_epoch = shard_len / cycle * batch_sizes.len() as u64 + extra;
            layouts.push(StageLayout {
                batch_sizes,
                prefix,
                iterations_per_epoch,
            });
        }
        // The schedule bounds max_epoch (limits::MAX_EPOCHS), so the table is small.
        let max_epoch = schedule.max_epoch();
        let mut epoch_start = Vec::with_capacity(max_epoch as usize + 1);
        let mut total = 0u64;
        for e in 0..max_epoch {
            epoch_start.push(total);
            total = total
                .checked_add(layouts[schedule.stage_index_at(e)].iterations_per_epoch)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "dataset_size {dataset_size} over {max_epoch} epochs makes more steps \
                         than 64 bits count"
                    ))
                })?;
        }
        epoch_start.push(total);
        if total == 0 {
            return Err(Error::InvalidArgument(format!(
                "a dataset of {dataset_size} clips on {world_size} ranks fills no full batch \
                 in any epoch"
            )));
        }
        Ok(Plan {
            schedule: schedule.clone(),
            dataset_size,
            world_size,
            rank,
            seed,
            shard_len,
            layouts,
            epoch_start,
        })
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
    pub fn dataset_size(&self) -> u64 {
        self.dataset_size
    }
    pub fn world_size(&self) -> u32 {
        self.world_size
    }
    pub fn rank(&self) -> u32 {
        self.rank
    }
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// Samples per rank per epoch, padding included.
    pub fn shard_len(&self) -> u64 {
        self.shard_len
    }

    pub fn total_steps(&self) -> u64 {
        self.epoch_start[self.epoch_start.len() - 1]
    }

    /// Steps in epoch `epoch`. Errors: OutOfRange past the last epoch.
    pub fn steps_in_epoch(&self, epoch: u32) -> Result<u64> {
        let max = self.schedule.max_epoch();
        if epoch >= max {
            return Err(Error::OutOfRange(format!(
                "epoch {epoch} is past the last epoch ({max} epochs)"
            )));
        }
        Ok(self.epoch_len(epoch))
    }

    /// Steps in epoch `epoch` (0 past the end).
    fn epoch_len(&self, epoch: u32) -> u64 {
        let e = epoch as usize;
        if e + 1 >= self.epoch_start.len() {
            return 0;
        }
        self.epoch_start[e + 1] - self.epoch_start[e]
    }

    /// First global step of epoch `epoch`; `total_steps()` for `max_epoch`.
    pub fn epoch_first_step(&self, epoch: u32) -> Option<u64> {
        self.epoch_start.get(epoch as usize).copied()
    }

    /// Steps spent in stage `stage` over the whole run.
    pub fn steps_in_stage(&self, stage: usize) -> u64 {
        let s = self.schedule.stages();
        if stage >= s.len() {
            return 0;
        }
        let start = self.schedule.stage_start(stage).min(s[stage].end_epoch);
        let end = if stage + 1 == s.len() {
            self.schedule.max_epoch()
        } else {
            s[stage].end_epoch
        };
        (start..end)
            .filter(|&e| self.schedule.stage_index_at(e) == stage)
            .map(|e| self.epoch_len(e))
            .sum()
    }

    /// Everything about global step `step`. O(log epochs).
    pub fn step(&self, step: u64) -> Result<Step> {
        let total = self.total_steps();
        if step >= total {
            return Err(Error::OutOfRange(format!(
                "step {step} is past the end of the plan ({total} steps)"
            )));
        }
        // The last epoch whose first step is <= step; zero-step epochs are skipped over.
        let epoch = self.epoch_start.partition_point(|&s| s <= step) - 1;
        let epoch = epoch as u32;
        let iteration = step - self.epoch_start[epoch as usize];
        let stage_index = self.schedule.stage_index_at(epoch);
        let layout = &self.layouts[stage_index];
        let stage = self.schedule.stages()[stage_index];
        let phases = layout.batch_sizes.len() as u64;
        let phase = (iteration % phases) as usize;
        let crop_size = self.schedule.short_cycle_crops(stage_index)[phase];
        let [jitter_min, jitter_max] = self.schedule.jitter_scales(crop_size);
        let [sampling_rate_min, sampling_rate_max] = self.schedule.sampling_rate_range(stage_index);
        let bn = self.schedule.bn_grouping(stage_index, self.world_size);
        let iterations_in_epoch = layout.iterations_per_epoch;
        let lr = self
            .schedule
            .lr_at_valid(f64::from(epoch) + iteration as f64 / iterations_in_epoch as f64);
        let last_of_epoch = iteration + 1 == iterations_in_epoch;
        let batch_size = layout.batch_sizes[phase];
        Ok(Step {
            step,
            epoch,
            iteration,
            iterations_in_epoch,
            stage: stage_index as u32,
            short_cycle_phase: phase as u32,
            batch_size,
            global_batch_size: u64::from(batch_size) * u64::from(self.world_size),
            num_frames: stage.num_frames,
            crop_size,
            sampling_rate_min,
            sampling_rate_max,
            jitter_min,
            jitter_max,
            bn_groups: bn.groups,
            bn_sync_ranks: bn.sync_ranks,
            lr,
            eval_after: last_of_epoch && self.schedule.is_eval_epoch(epoch),
            checkpoint_after: last_of_epoch && self.schedule.is_checkpoint_epoch(epoch),
        })
    }

    /// This rank's work over the run in clip-frame-pixels, the sum over steps of batch x frames x
    /// crop^2: what a video network's FLOPs scale with, so the ratio of two plans' work
    /// estimates their compute ratio before any GPU time is spent.
    pub fn work(&self) -> f64 {
        (0..self.schedule.max_epoch())
            .map(|e| self.work_in_epoch(e))
            .sum()
    }

    /// `work()` of one epoch.
    pub fn work_in_epoch(&self, epoch: u32) -> f64 {
        let n = self.epoch_len(epoch);
        if n == 0 {
            return 0.0;
        }
        let stage = self.schedule.stage_index_at(epoch);
        let layout = &self.layouts[stage];
        let frames = f64::from(self.schedule.stages()[stage].num_frames);
        let crops = self.schedule.short_cycle_crops(stage);
        let phases = layout.batch_sizes.len() as u64;
        // Iteration i of an epoch is in phase i % phases.
        (0..phases)
            .map(|p| {
                let count = n / phases + u64::from(p < n % phases);
                let crop = f64::from(crops[p as usize]);
                count as f64 * f64::from(layout.batch_sizes[p as usize]) * frames * crop * crop
            })
            .sum()
    }

    /// Every distinct (batch size, frames, crop, BN groups) this rank meets from `step` to the
    /// end, in order of first appearance: what a warm-up pass has to visit.
    pub fn shapes_from(&self, step: u64) -> Vec<[u32; 4]> {
        let first_epoch = match self.step(step) {
            Ok(s) => s.epoch,
            Err(_) => return Vec::new(),
        };
        let mut out: Vec<[u32; 4]> = Vec::new();
        for epoch in first_epoch..self.schedule.max_epoch() {
            let Some(first) = self.epoch_first_step(epoch) else {
                continue;
            };
            let steps = self.epoch_len(epoch);
            let phases = self.layouts[self.schedule.stage_index_at(epoch)]
                .batch_sizes
                .len() as u64;
            for i in 0..phases.min(steps) {
                if let Ok(s) = self.step(first + i) {
                    let shape = [s.batch_size, s.num_frames, s.crop_size, s.bn_groups];
                    if !out.contains(&shape) {
                        out.push(shape);
                    }
                }
            }
        }
        out
    }

    /// This rank's dataset indices for `step`, written into `out` (cleared first).
    pub fn step_indices(&self, step: u64, out: &mut Vec<u64>) -> Result<()> {
        let s = self.step(step)?;
        let layout = &self.layouts[s.stage as usize];
        let phases = layout.batch_sizes.len() as u64;
        let cycle = layout.prefix[layout.batch_sizes.len()];
        let offset = s.iteration / phases * cycle + layout.prefix[s.short_cycle_phase as usize];
        let perm = Permutation::new(self.dataset_size, self.seed, u64::from(s.epoch));
        let w = u64::from(self.world_size);
        let r = u64::from(self.rank);
        out.clear();
        out.extend((0..u64::from(s.batch_size)).map(|j| {
            // Padding repeats the permutation from its start, as DistributedSampler does.
            let global_pos = r + (offset + j) * w;
            perm.at(global_pos % self.dataset_size)
        }));
        Ok(())
    }
}
