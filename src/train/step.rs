//! One training step: forward under autocast, backward, gradients summed over ranks, SGD.

use tch::Tensor;

use std::time::Instant;

use super::amp::{LossScaler, Precision};
use super::graphs::{self, Next, StepGraphs};
use super::optim::Lr;
use super::{amp, loss_value, Trainer};
use crate::distributed::sync_bn::GroupStats;
use crate::error::{Error, Result};
use crate::model::bn::{Bn, SyncStats};
use crate::model::Network;

/// Backward from `loss`, scaled first when fp16 has a loss scaler.
fn backward(scaler: Option<&LossScaler>, loss: &Tensor) -> Result<()> {
    match scaler {
        None => Ok(loss.f_backward()?),
        Some(scaler) => Ok(scaler.f_scale_loss(loss)?.f_backward()?),
    }
}

/// The loss of a training-mode forward pass, under the run's autocast: cross-entropy over
/// class indices [N], or, for multi-hot float targets [N, classes], PySlowFast's `bce_logit`
/// (binary cross-entropy on the logits, the mean over clips and classes). A function of the
/// fields it needs, so a step can lend the collective to sync BN at the same time.
fn training_loss(
    model: &Network,
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
        if let Some(cudnn) = &self.cudnn {
            let size = fast.size();
            let at = |i: usize| size.get(i).map_or(0, |&v| v as u32);
            cudnn.enter([at(0), at(2), at(3), bn_groups as u32]);
        }
        let loss = match self.graphs.take() {
            Some(mut graphs) => {
                let loss = self.graph_step(&mut graphs, (slow, fast, labels), bn_groups, lr);
                self.graphs = Some(graphs);
                loss?
            }
            None => self.eager_step((slow, fast, labels), bn_groups, sync_ranks, Lr::Value(lr))?,
        };
        if let Some(cudnn) = &self.cudnn {
            // The step's convolutions are queued with their algorithms; evaluation and precise
            // BN, which may come next, use the heuristics.
            cudnn.leave();
        }
        self.rebuild_buckets_once()?;
        Ok(loss)
    }

    /// A step where `run.cuda_graphs` is on: replayed when its shape has a graph, captured
    /// after two eager steps at it, eager otherwise (and for good after a failed capture). The
    /// SGD reads the learning rate from the device in every case, so eager and replayed steps
    /// compute alike.
    fn graph_step(
        &mut self,
        graphs: &mut StepGraphs,
        batch: (&Tensor, &Tensor, &Tensor),
        bn_groups: i64,
        lr: f64,
    ) -> Result<Tensor> {
        graphs.set_lr(lr)?;
        let lr_t = graphs.lr.shallow_clone();
        let key = graphs::key(batch.0, batch.1, batch.2, bn_groups);
        match graphs.next(&key) {
            Next::Replay(captured) => captured.replay(batch.0, batch.1, batch.2),
            Next::Eager => self.eager_step(batch, bn_groups, 1, Lr::Device(&lr_t)),
            Next::Capture => {
                let device = self.device;
                let captured = graphs.capture(key, device, batch, |slow, fast, labels, lr| {
                    self.eager_step((slow, fast, labels), bn_groups, 1, Lr::Device(lr))
                })?;
                match captured {
                    Some(loss) => Ok(loss),
                    None => self.eager_step(batch, bn_groups, 1, Lr::Device(&lr_t)),
                }
            }
        }
    }

    /// Forward, backward, the gradients' mean over ranks and SGD, queued on the device; the
    /// loss stays there.
    fn eager_step(
        &mut self,
        (slow, fast, labels): (&Tensor, &Tensor, &Tensor),
        bn_groups: i64,
        sync_ranks: usize,
        lr: Lr,
    ) -> Result<Tensor> {
        let loss = if sync_ranks > 1 {
            let stats = GroupStats::new(self.comm.as_mut(), sync_ranks)?;
            let bn = Bn {
                groups: bn_groups,
                sync: Some(&stats as &dyn SyncStats),
            };
            let loss = training_loss(
                &self.model,
                self.device,
                self.precision,
                (slow, fast, labels),
                bn,
            )?;
            self.opt.zero_grad()?;
            let backward = backward(self.scaler.as_ref(), &loss);
            if let Some(e) = stats.take_error() {
                return Err(e);
            }
            backward?;
            // Sync BN's collectives ran inside this backward, from autograd's threads: the
            // gradients' all-reduce waits for the end of it rather than sharing the engine.
            drop(stats);
            let t0 = Instant::now();
            self.all_reduce_grads()?;
            self.grad_reduce_seconds += t0.elapsed().as_secs_f64();
            loss
        } else {
            let loss = training_loss(
                &self.model,
                self.device,
                self.precision,
                (slow, fast, labels),
                Bn::groups(bn_groups),
            )?;
            self.opt.zero_grad()?;
            // Each bucket's all-reduce starts from autograd's hooks as soon as its gradients
            // are in (grads.rs), unless the run asks to wait for the whole backward.
            let overlap = self.distributed() && self.config.run.overlap_grad_reduce;
            if overlap {
                self.grads.arm(self.comm.as_mut())?;
            }
            let backward = backward(self.scaler.as_ref(), &loss);
            let t0 = Instant::now();
            // Before the update and before the overflow check, so every rank steps (or skips)
            // alike; after a failed backward too, so no rank is left in a collective.
            let reduced = match (overlap, &backward) {
                (true, _) => self.grads.finish(self.comm.as_mut()),
                (false, Ok(())) => self.all_reduce_grads(),
                (false, Err(_)) => Ok(()),
            };
            self.grad_reduce_seconds += t0.elapsed().as_secs_f64();
            backward?;
            reduced?;
            loss
        }
        // Detached, so no graph that calls back into sync BN outlives the step.
        .f_detach()?;
        match &mut self.scaler {
            None => self.opt.step_with(lr)?,
            Some(scaler) => {
                let finite = scaler.unscale(&self.opt.grads()?)?;
                if finite {
                    self.opt.step_with(lr)?;
                }
                scaler.update(finite);
            }
        }
        Ok(loss)
    }

    /// After the first backward: the gradient buckets laid out again in the order backward
    /// produced the gradients, where it differs from the one assumed (DDP's rebuild_buckets),
    /// so the first bucket is complete first. Every rank must agree on it, or none rebuilds.
    fn rebuild_buckets_once(&mut self) -> Result<()> {
        let Some(order) = self.grads.take_observed_order() else {
            return Ok(());
        };
        let mut rebuild = self.grads.differs(&order);
        if self.distributed() {
            let bytes: Vec<u8> = order
                .iter()
                .flat_map(|&i| (i as u64).to_le_bytes())
                .collect();
            let mine = [
                f64::from(crc32fast::hash(&bytes)),
                f64::from(u8::from(rebuild)),
            ];
            let all = self.comm.all_gather_f64(&mine)?;
            rebuild = all.iter().all(|v| v[0] == mine[0] && v[1] == 1.0);
        }
        if rebuild {
            self.grads.rebuild(&order)?;
            if let Some(graphs) = &mut self.graphs {
                graphs.clear();
            }
        }
        Ok(())
    }
}
