//! LR policies of PySlowFast's `utils/lr_policy.py`, evaluated on the schedule's (possibly
//! multigrid-derived) steps, lrs and max_epoch.

use super::{LrPolicy, Schedule};

pub(super) fn lr_at(schedule: &Schedule, epoch: f64) -> f64 {
    let s = &schedule.config.solver;
    let epoch = epoch.max(0.0);
    if epoch < s.warmup_epochs {
        // The warm-up ramps to the policy's LR at the end of the warm-up; with the long cycle
        // that is the stage-0 LR, 8 x base_lr by default (spec 1.4 step 7).
        let end = policy_lr(schedule, s.warmup_epochs);
        let alpha = (end - s.warmup_start_lr) / s.warmup_epochs;
        return epoch * alpha + s.warmup_start_lr;
    }
    policy_lr(schedule, epoch)
}

pub(super) fn policy_lr(schedule: &Schedule, epoch: f64) -> f64 {
    let s = &schedule.config.solver;
    match s.lr_policy {
        LrPolicy::StepsWithRelativeLrs => schedule.lrs[step_index(schedule, epoch)] * s.base_lr,
        LrPolicy::StepsWithLrs => schedule.lrs[step_index(schedule, epoch)],
        LrPolicy::Cosine => {
            let offset = if s.cosine_after_warmup {
                s.warmup_epochs
            } else {
                0.0
            };
            let max_epoch = f64::from(schedule.max_epoch);
            s.cosine_end_lr
                + (s.base_lr - s.cosine_end_lr)
                    * ((std::f64::consts::PI * (epoch - offset) / (max_epoch - offset)).cos() + 1.0)
                    * 0.5
        }
    }
}

/// Index of the last LR boundary at or before `epoch` (PySlowFast's `get_step_index`).
fn step_index(schedule: &Schedule, epoch: f64) -> usize {
    let n = schedule.steps.partition_point(|&b| f64::from(b) <= epoch);
    n.saturating_sub(1)
}
