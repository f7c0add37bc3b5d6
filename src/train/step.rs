//! One training step: forward under autocast, backward, gradients summed over ranks, SGD.

use tch::Tensor;

use super::amp::Precision;
use super::{amp, loss_value, Trainer};
use crate::distributed::sync_bn::GroupStats;
use crate::error::{Error, Result};
use crate::model::bn::{Bn, SyncStats};
use crate::model::SlowFast;

/// The loss of a training-mode forward pass, under the run's autocast: cross-entropy over
/// class indices [N], or, for multi-hot float targets [N, classes], PySlowFast's `bce_logit`
/// (binary cross-entropy on the logits, the mean over clips and classes). A function of the
/// fields it needs, so a step can lend the collective to sync BN at the same time.
fn training_loss(
    model: &SlowFast,
    device: tch::Device,
    precision: Precision,
    (slow, fast, labels): (&Tensor, &Tensor, &Tensor),
    bn: Bn,
) -> Result<Tensor> {
    amp::autocast(device, precision, || {
        let logits = model.forward_bn(slow, fast, bn, true)?;
        if labels.kind() == tch::Kind::Float {
            logits.f_binary_cross_entropy_with_logits::<Tensor>(
                labels,
                None,
                None,
                tch::Reduction::Mean,
            )
        } else {
            logits.f_cross_entropy_loss::<Tensor>(labels, None, tch::Reduction::Mean, -100, 0.0)
        }
        .map_err(Error::from)
    })
}

impl Trainer {
    /// One SGD step on a batch already on the device; returns the loss. Dropout is seeded from
    /// (seed, step), so a resumed run repeats the interrupted one exactly.
    pub fn train_step(
        &mut self,
        slow: &Tensor,
        fast: &Tensor,
        labels: &Tensor,
        bn_groups: i64,
        lr: f64,
        step: u64,
    ) -> Result<f64> {
        let loss = self.launch_step(slow, fast, labels, bn_groups, lr, step)?;
        loss_value(&loss, step)
    }

    /// One step on a batch the caller built (the C API's path): BN groups and LR default to the
    /// plan's at the run's position, which then advances as in `fit`, so checkpoints, resume and
    /// the dropout seed line up with a `fit` run. `labels` may be on the host (checked there,
    /// then uploaded) or on the trainer's device.
    pub fn host_step(
        &mut self,
        slow: &Tensor,
        fast: &Tensor,
        labels: &Tensor,
        bn_groups: Option<i64>,
        lr: Option<f64>,
    ) -> Result<f64> {
        let step = self.next_step;
        let planned = self.plan.step(step).ok();
        let from_plan = |what: &str| {
            Error::OutOfRange(format!(
                "step {step} is past the plan's {} steps: give {what} explicitly",
                self.plan.total_steps()
            ))
        };
        let groups = match bn_groups {
            Some(g) => g,
            None => i64::from(
                planned
                    .as_ref()
                    .ok_or_else(|| from_plan("bn_groups"))?
                    .bn_groups,
            ),
        };
        let lr = match lr {
            Some(lr) => lr,
            None => planned.as_ref().ok_or_else(|| from_plan("lr"))?.lr,
        };
        let n = fast.size().first().copied().unwrap_or(0);
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "lr {lr} must be a finite number >= 0"
            )));
        }
        // Shapes and BN groups are checked by the model's forward pass, before any update.
        // Labels on the host are checked there and then uploaded, so the check reads nothing
        // back from the device.
        self.check_labels(labels, n)?;
        let labels = labels.f_to_device(self.device)?;
        let loss = self.launch_step(slow, fast, &labels, groups, lr, step)?;
        // The update is applied: the position advances even when the loss turns out not
        // finite, so every rank stays at the same step (and the same collectives).
        self.next_step += 1;
        self.clips_seen += n as u64 * self.launch.world_size as u64;
        loss_value(&loss, step)
    }

    /// `n` integer class indices below the model's class count: what cross-entropy would
    /// otherwise refuse deep inside libtorch (or, on CUDA, as a device-side assert). A
    /// multi-label task (`data.multi_label`) takes float targets [n, classes] in [0, 1].
    /// Checked where the labels are: on the host, the check waits for nothing on the device.
    fn check_labels(&self, labels: &Tensor, n: i64) -> Result<()> {
        let classes = i64::from(self.config.model.num_classes);
        if self.config.data.multi_label {
            if labels.size() != [n, classes] || labels.kind() != tch::Kind::Float {
                return Err(Error::InvalidArgument(format!(
                    "a multi-label task (data.multi_label) takes float targets [{n}, {classes}], got {:?} {:?}",
                    labels.kind(),
                    labels.size()
                )));
            }
            let (lo, hi) = (
                labels.f_min().and_then(|v| v.f_double_value(&[])),
                labels.f_max().and_then(|v| v.f_double_value(&[])),
            );
            let (lo, hi) = (lo?, hi?);
            if !(lo >= 0.0 && hi <= 1.0) {
                return Err(Error::InvalidArgument(format!(
                    "multi-label targets must lie in [0, 1], got {lo}..={hi}"
                )));
            }
            return Ok(());
        }
        if labels.size() != [n] || labels.kind() != tch::Kind::Int64 {
            return Err(Error::InvalidArgument(format!(
                "labels must be {n} int64 class indices, got {:?} {:?}",
                labels.kind(),
                labels.size()
            )));
        }
        let (lo, hi) = (
            labels.f_min().and_then(|v| v.f_int64_value(&[])),
            labels.f_max().and_then(|v| v.f_int64_value(&[])),
        );
        let (lo, hi) = (lo?, hi?);
        if lo < 0 || hi >= classes {
            return Err(Error::InvalidArgument(format!(
                "labels must be class indices in 0..{classes} (model.num_classes), got {lo}..={hi}"
            )));
        }
        Ok(())
    }

    /// Cross-entropy of a training-mode forward pass, under the run's autocast.
    pub(super) fn training_loss(
        &self,
        slow: &Tensor,
        fast: &Tensor,
        labels: &Tensor,
        bn_groups: i64,
    ) -> Result<Tensor> {
        training_loss(
            &self.model,
            self.device,
            self.precision,
            (slow, fast, labels),
            Bn::groups(bn_groups),
        )
    }

    /// Queues forward, backward and the update without waiting for the device (except with
    /// fp16, whose overflow check reads the gradients back); the loss stays on the device.
    pub(super) fn launch_step(
        &mut self,
        slow: &Tensor,
        fast: &Tensor,
        labels: &Tensor,
        bn_groups: i64,
        lr: f64,
        step: u64,
    ) -> Result<Tensor> {
        self.precise_at = None;
        // Ranks draw different dropout masks; rank 0's stream is the single-process one.
        let rank_salt = (self.launch.rank as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        tch::manual_seed(
            (self.config.run.seed ^ step.wrapping_mul(0x9E37_79B9) ^ rank_salt) as i64 & i64::MAX,
        );
        // Sync BN where the plan asks for it: a rank's batch below bn_base_size (spec 1.10).
        let sync_ranks = if self.distributed() {
            self.plan.step(step).map_or(1, |s| s.bn_sync_ranks as usize)
        } else {
            1
        };
        let loss = {
            let stats = if sync_ranks > 1 {
                Some(GroupStats::new(self.comm.as_mut(), sync_ranks)?)
            } else {
                None
            };
            let bn = Bn {
                groups: bn_groups,
                sync: stats.as_ref().map(|s| s as &dyn SyncStats),
            };
            let loss = training_loss(
                &self.model,
                self.device,
                self.precision,
                (slow, fast, labels),
                bn,
            )?;
            self.opt.zero_grad()?;
            let backward = match &self.scaler {
                None => loss.f_backward().map_err(Error::from),
                Some(scaler) => scaler.f_scale_loss(&loss).and_then(|l| Ok(l.f_backward()?)),
            };
            if let Some(e) = stats.as_ref().and_then(GroupStats::take_error) {
                return Err(e);
            }
            backward?;
            // Detached here, so no graph that calls back into `stats` outlives it.
            loss.f_detach()?
        };
        // Before the update and before the overflow check, so every rank steps (or skips)
        // alike.
        self.all_reduce_grads()?;
        match &mut self.scaler {
            None => self.opt.step(lr)?,
            Some(scaler) => {
                let finite = scaler.unscale(&self.opt.grads()?)?;
                if finite {
                    self.opt.step(lr)?;
                }
                scaler.update(finite);
            }
        }
        Ok(loss.f_detach()?)
    }
}
