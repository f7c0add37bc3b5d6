//! C API of the per-step plan.

use super::error::{guard, mg_status, non_null, out_ptr, FfiError};
use super::schedule::mg_schedule;
use crate::plan::Plan;

/// An immutable per-step plan for one rank. Create with `mg_plan_new`, free with
/// `mg_plan_free`.
pub struct mg_plan {
    pub(crate) inner: Plan,
}

/// Everything a trainer needs for one global step of one rank.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct mg_step {
    /// Global step (0-based).
    pub step: u64,
    /// Iteration within the epoch.
    pub iteration: u64,
    pub iterations_in_epoch: u64,
    /// Clips over all ranks.
    pub global_batch_size: u64,
    /// Learning rate for this step: the fractional epoch is epoch + iteration / iterations_in_epoch.
    pub lr: f64,
    pub epoch: u32,
    /// Index of the schedule stage (see mg_schedule_stage).
    pub stage: u32,
    /// 0, 1, 2 with the short cycle (smallest crop and largest batch first); 0 without.
    pub short_cycle_phase: u32,
    /// Clips on this rank.
    pub batch_size: u32,
    pub num_frames: u32,
    pub crop_size: u32,
    /// Temporal stride range, both ends inclusive.
    pub sampling_rate_min: u32,
    pub sampling_rate_max: u32,
    /// Short-side resize range for training scale jitter at this crop.
    pub jitter_min: u32,
    pub jitter_max: u32,
    /// BatchNorm statistics groups within this rank's batch (1 = plain BN).
    pub bn_groups: u32,
    /// Ranks that pool BN statistics (sync BN); 1 = none.
    pub bn_sync_ranks: u32,
    /// Last step of an epoch after which to evaluate.
    pub eval_after: bool,
    /// Last step of an epoch after which to checkpoint.
    pub checkpoint_after: bool,
}

/// Builds the plan of rank `rank` in a world of `world_size` ranks over a dataset of
/// `dataset_size` clips, shuffled by `seed`. The plan copies what it needs from `schedule`.
/// Errors: MG_STATUS_NULL_ARGUMENT, MG_STATUS_INVALID_ARGUMENT (world size 0, rank not below
/// it, train.batch_size not divisible by it, a dataset too small for one batch).
#[no_mangle]
pub extern "C" fn mg_plan_new(
    schedule: *const mg_schedule,
    dataset_size: u64,
    world_size: u32,
    rank: u32,
    seed: u64,
    out: *mut *mut mg_plan,
) -> mg_status {
    guard("mg_plan_new", || {
        let s = non_null(schedule, "schedule")?;
        let out = out_ptr(out, "out")?;
        let inner = Plan::new(&s.inner, dataset_size, world_size, rank, seed)?;
        *out = Box::into_raw(Box::new(mg_plan { inner }));
        Ok(())
    })
}

/// Frees a plan; NULL is a no-op.
#[no_mangle]
pub extern "C" fn mg_plan_free(plan: *mut mg_plan) {
    super::error::free_box("mg_plan_free", plan);
}

/// Global steps in the whole run.
#[no_mangle]
pub extern "C" fn mg_plan_total_steps(plan: *const mg_plan, out: *mut u64) -> mg_status {
    guard("mg_plan_total_steps", || {
        let p = non_null(plan, "plan")?;
        *out_ptr(out, "out")? = p.inner.total_steps();
        Ok(())
    })
}

/// Steps in 0-based epoch `epoch`. Errors: MG_STATUS_OUT_OF_RANGE past the last epoch.
#[no_mangle]
pub extern "C" fn mg_plan_steps_in_epoch(
    plan: *const mg_plan,
    epoch: u32,
    out: *mut u64,
) -> mg_status {
    guard("mg_plan_steps_in_epoch", || {
        let p = non_null(plan, "plan")?;
        let out = out_ptr(out, "out")?;
        *out = p.inner.steps_in_epoch(epoch)?;
        Ok(())
    })
}

/// Everything about global step `step` in O(log epochs). Errors: MG_STATUS_OUT_OF_RANGE at or
/// past mg_plan_total_steps.
#[no_mangle]
pub extern "C" fn mg_plan_step(plan: *const mg_plan, step: u64, out: *mut mg_step) -> mg_status {
    guard("mg_plan_step", || {
        let p = non_null(plan, "plan")?;
        let out = out_ptr(out, "out")?;
        let s = p.inner.step(step)?;
        *out = mg_step {
            step: s.step,
            iteration: s.iteration,
            iterations_in_epoch: s.iterations_in_epoch,
            global_batch_size: s.global_batch_size,
            lr: s.lr,
            epoch: s.epoch,
            stage: s.stage,
            short_cycle_phase: s.short_cycle_phase,
            batch_size: s.batch_size,
            num_frames: s.num_frames,
            crop_size: s.crop_size,
            sampling_rate_min: s.sampling_rate_min,
            sampling_rate_max: s.sampling_rate_max,
            jitter_min: s.jitter_min,
            jitter_max: s.jitter_max,
            bn_groups: s.bn_groups,
            bn_sync_ranks: s.bn_sync_ranks,
            eval_after: s.eval_after,
            checkpoint_after: s.checkpoint_after,
        };
        Ok(())
    })
}

/// Writes this rank's dataset indices for `step` into `buf` (room for `capacity` values) and
/// their count into `*len`. With `capacity` too small (`buf` may then be NULL), returns
/// MG_STATUS_BUFFER_TOO_SMALL, writes nothing to `buf` and sets `*len` to the count needed.
#[no_mangle]
pub extern "C" fn mg_plan_step_indices(
    plan: *const mg_plan,
    step: u64,
    buf: *mut u64,
    capacity: usize,
    len: *mut usize,
) -> mg_status {
    guard("mg_plan_step_indices", || {
        let p = non_null(plan, "plan")?;
        let len = out_ptr(len, "len")?;
        let mut indices = Vec::new();
        p.inner.step_indices(step, &mut indices)?;
        if indices.len() > capacity {
            *len = indices.len();
            return Err(FfiError::Lib(crate::Error::BufferTooSmall(format!(
                "step {step} has {} indices but the buffer holds {capacity}",
                indices.len()
            ))));
        }
        if buf.is_null() {
            return Err(FfiError::Null("buf"));
        }
        // SAFETY: `buf` holds `capacity` >= indices.len() values by contract.
        unsafe { std::ptr::copy_nonoverlapping(indices.as_ptr(), buf, indices.len()) };
        *len = indices.len();
        Ok(())
    })
}
