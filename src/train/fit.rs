//! The fit loop: loader, staged batches, steps, evaluation and checkpoints on the plan's schedule.

use std::collections::BTreeMap;
use std::time::Instant;

use super::metrics::{
    EvalRecord, Record, ShapeTiming, SummaryRecord, TimingRecord, TrainRecord, WarmupRecord,
};
use super::stage::Staged;
use super::{loss_value, Progress, Summary, Trainer};
use crate::data::{Loader, LoaderOptions};
use crate::error::Result;

impl Trainer {
    /// Trains from the next step to the end of the plan (or until `progress` returns true, which
    /// cancels after a checkpoint).
    ///
    /// A trainer that has not stepped, resumed or loaded a checkpoint yet continues from the
    /// newest checkpoint of its output directory first (`run.auto_resume`, PySlowFast's
    /// TRAIN.AUTO_RESUME): a restarted job goes on where it stopped. Weights given by
    /// `init_from` give way to such a checkpoint.
    pub fn fit(&mut self, progress: &mut dyn FnMut(&Progress) -> bool) -> Result<Summary> {
        if self.config.run.auto_resume && !self.resumed && self.next_step == 0 {
            self.resume()?;
        }
        let total = self.plan.total_steps();
        let alpha = self.config.model.collate_alpha();
        let opts = LoaderOptions {
            workers: self.config.run.num_workers,
            queue_clips: self.config.run.queue_clips,
            alpha,
        };
        let mut loader = Loader::new(
            self.plan.clone(),
            self.train.clone(),
            self.next_step..total,
            opts,
        )?;
        if !self.warmed_up
            && self
                .config
                .run
                .warmup_shapes
                .unwrap_or(self.device.is_cuda())
        {
            let t0 = Instant::now();
            let shapes = self.warm_up()?;
            let cudnn_searched = self.cudnn.as_ref().map(|plan| {
                let mut searched: Vec<[u32; 4]> = plan
                    .by_shape
                    .iter()
                    .filter(|(_, &on)| on)
                    .map(|(&shape, _)| shape)
                    .collect();
                searched.sort_unstable();
                searched
            });
            let line = Record::Warmup(WarmupRecord {
                shapes,
                seconds: t0.elapsed().as_secs_f64(),
                cudnn_searched,
            });
            self.write_metrics(line.to_value()?)?;
        }
        // (start, clips, the loss summed on the device, the window's first step).
        let first_step = self.next_step;
        let mut window: (Instant, u64, Option<tch::Tensor>, u64) =
            (Instant::now(), 0, None, first_step);
        let mut last_loss = f64::NAN;
        let mut cancel_asked = false;
        let mut final_val = None;
        let mut cancelled = false;
        let mut preempted = None;
        let mut timing = Timing::new(self.precise_seconds);
        let grad_reduce_at_start = self.grad_reduce_seconds;
        let mut next = timing.time_data(|| self.next_staged(&mut loader))?;
        timing.attribute_data(next.as_ref().map(|b| self.shape_of(b)));
        while let Some(cur) = next.take() {
            let Staged {
                batch,
                slow,
                fast,
                labels,
            } = cur;
            let step = self.plan.step(batch.step)?;
            let (n, t, s) = (
                batch.len() as i64,
                i64::from(batch.num_frames),
                i64::from(batch.crop_size),
            );
            let started = Instant::now();
            let loss = self.launch_step(
                &slow,
                &fast,
                &labels,
                i64::from(step.bn_groups),
                step.lr,
                step.step,
            )?;
            let launched = started.elapsed().as_secs_f64();
            // The next batch goes to the device while this step's kernels run. Nothing reads
            // the device back here: the loss stays there, summed over the log window, and is
            // read at log points only (every run.log_period steps, evaluations, checkpoints,
            // the first and last step), where its finiteness over the window is checked too.
            next = timing.time_data(|| self.next_staged(&mut loader))?;
            timing.attribute_data(next.as_ref().map(|b| self.shape_of(b)));
            let waited = Instant::now();
            window.2 = Some(match window.2.take() {
                Some(sum) => sum.f_add(&loss)?,
                None => loss.shallow_clone(),
            });
            let log_point = step.step == first_step
                || (step.step + 1) % self.config.run.log_period == 0
                || step.eval_after
                || step.checkpoint_after
                || step.step + 1 == total;
            if log_point {
                let sum = window.2.take().map(|s| s.f_double_value(&[])).transpose()?;
                if sum.is_some_and(|v| !v.is_finite()) {
                    return Err(crate::Error::InvalidArgument(format!(
                        "loss is not finite within steps {}..={}",
                        window.3, step.step
                    )));
                }
                window.3 = step.step + 1;
                last_loss = loss_value(&loss, step.step)?;
            }
            timing.add_step(
                (step.stage, t, s, n),
                launched + waited.elapsed().as_secs_f64(),
                n as u64 * self.launch.world_size as u64,
            );
            self.next_step = step.step + 1;
            let clips = n as u64 * self.launch.world_size as u64;
            self.clips_seen += clips;
            window.1 += clips;
            let wall = self.wall_seconds();
            if (step.step + 1) % self.config.run.log_period == 0 || step.eval_after {
                // The logged loss is the mean over ranks (every rank logs at the same steps).
                let world = self.launch.world_size as f64;
                let loss = self.sum_over_ranks(&[last_loss])?[0] / world;
                let secs = window.0.elapsed().as_secs_f64();
                let stats = loader.stats();
                let line = Record::Train(TrainRecord {
                    step: step.step,
                    epoch: step.epoch,
                    stage: step.stage,
                    shape: [n, t, s].map(|v| v as u64),
                    bn_groups: step.bn_groups,
                    bn_sync_ranks: step.bn_sync_ranks,
                    lr: step.lr,
                    loss,
                    clips_per_s: window.1 as f64 / secs.max(1e-9),
                    data_wait_s: stats.wait_seconds,
                    data_failures: stats.failures,
                    wall_s: wall,
                    clips_seen: self.clips_seen,
                });
                self.write_metrics(line.to_value()?)?;
                window.0 = Instant::now();
                window.1 = 0;
            }
            if step.eval_after {
                let t0 = Instant::now();
                let acc = self.validate(step.stage as usize, step.epoch)?;
                timing.eval_s += t0.elapsed().as_secs_f64();
                let wall = self.wall_seconds();
                if let Some((a, shape)) = acc {
                    let line = Record::Eval(EvalRecord {
                        split: "val".into(),
                        step: step.step,
                        epoch: step.epoch,
                        top1: a.top1,
                        top5: a.top5,
                        map: a.map,
                        clips: a.clips as u64,
                        wall_s: wall,
                        clips_seen: self.clips_seen,
                        shape: Some(shape),
                        protocol: Some(self.config.run.val_protocol),
                        seconds: Some(t0.elapsed().as_secs_f64()),
                    });
                    self.write_metrics(line.to_value()?)?;
                }
                final_val = acc.map(|(a, _)| a);
            }
            let asked = progress(&Progress {
                step: step.step,
                total_steps: total,
                epoch: step.epoch,
                stage: step.stage,
                batch_size: step.batch_size,
                num_frames: step.num_frames,
                crop_size: step.crop_size,
                loss: last_loss,
                lr: step.lr,
            });
            // One rank alone stops at once; ranks agree at log points, where they already
            // exchange the loss, rather than with a collective at every step. A preemption
            // notice (SIGTERM, SIGUSR1: crate::distributed::signals) stops every rank the same way,
            // so a signal waits at most run.log_period steps.
            cancel_asked |= asked;
            let signal = crate::distributed::signals::pending();
            let cancel = if log_point || !self.distributed() {
                let agreed = self.any_rank_each(&[cancel_asked, signal.is_some()])?;
                if agreed[1] {
                    // The signal's name on the ranks that got one; SIGTERM on one that did not.
                    preempted = Some(signal.unwrap_or(libc::SIGTERM));
                }
                agreed[0] || agreed[1]
            } else {
                false
            };
            let t0 = Instant::now();
            if step.checkpoint_after {
                // PySlowFast's checkpoints hold precise statistics: at the shape validation
                // uses for this stage, unless this step's validation computed them already.
                let (at, _) = self.val_views(Some(step.stage as usize), step.epoch)?;
                self.precise_bn(at)?;
            }
            if step.checkpoint_after || cancel {
                self.save_checkpoint()?;
            }
            timing.checkpoint_s += t0.elapsed().as_secs_f64();
            if cancel {
                cancelled = true;
                if preempted.is_some() {
                    crate::distributed::signals::clear();
                }
                break;
            }
        }
        drop(loader);
        let t0 = Instant::now();
        let test = if cancelled { None } else { self.test()? };
        timing.eval_s += t0.elapsed().as_secs_f64();
        let wall = self.wall_seconds();
        let mut line = timing.line(self.precise_seconds, |t, s| self.model.macs(t, s));
        if let Record::Timing(t) = &mut line {
            t.grad_reduce_s = self.grad_reduce_seconds - grad_reduce_at_start;
            t.cuda_graphs = self.cuda_graphs().0;
        }
        self.write_metrics(line.to_value()?)?;
        let summary = Summary {
            wall_seconds: wall,
            steps: self.next_step,
            clips_seen: self.clips_seen,
            final_val,
            test,
            cancelled,
            preempted,
        };
        let line = Record::Summary(SummaryRecord {
            wall_s: wall,
            steps: summary.steps,
            clips_seen: summary.clips_seen,
            top1: final_val.map(|a| a.top1),
            top5: final_val.map(|a| a.top5),
            test_top1: test.map(|a| a.top1),
            test_top5: test.map(|a| a.top5),
            map: final_val.and_then(|a| a.map),
            test_map: test.and_then(|a| a.map),
            cancelled,
            preempted: preempted.map(crate::distributed::signals::name),
        });
        self.write_metrics(line.to_value()?)?;
        Ok(summary)
    }
}

impl Trainer {
    /// The timing line's key of a staged batch.
    fn shape_of(&self, b: &Staged) -> ShapeKey {
        let stage = self.plan.step(b.batch.step).map_or(0, |s| s.stage);
        (
            stage,
            i64::from(b.batch.num_frames),
            i64::from(b.batch.crop_size),
            b.batch.len() as i64,
        )
    }
}

/// (stage, frames, crop, batch).
type ShapeKey = (u32, i64, i64, i64);

/// Per shape: steps, seconds stepping, clips, seconds waiting for the loader.
#[derive(Default)]
struct ShapeTime {
    steps: u64,
    seconds: f64,
    clips: u64,
    data_wait: f64,
}

type ShapeSeconds = BTreeMap<ShapeKey, ShapeTime>;

/// Where a fit's wall-clock time went, for `multigrid bench speedup`'s efficiency table:
/// training steps per (stage, frames, crop, batch), the wait for the loader, evaluation,
/// precise BN and checkpoints. Evaluation and checkpoint seconds include the precise BN they
/// ran; `precise_bn_s` is all of it, wherever it ran.
struct Timing {
    shapes: ShapeSeconds,
    data_s: f64,
    /// The latest wait for the loader, not yet given to a shape.
    last_wait: f64,
    eval_s: f64,
    checkpoint_s: f64,
    precise_at_start: f64,
}

impl Timing {
    fn new(precise_seconds: f64) -> Timing {
        Timing {
            shapes: BTreeMap::new(),
            data_s: 0.0,
            last_wait: 0.0,
            eval_s: 0.0,
            checkpoint_s: 0.0,
            precise_at_start: precise_seconds,
        }
    }

    fn time_data<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let t0 = Instant::now();
        let r = f();
        self.last_wait = t0.elapsed().as_secs_f64();
        self.data_s += self.last_wait;
        r
    }

    /// Gives the latest wait to the shape of the batch it fetched (None: the end of the plan,
    /// which counts in the total only).
    fn attribute_data(&mut self, shape: Option<ShapeKey>) {
        if let Some(shape) = shape {
            self.shapes.entry(shape).or_default().data_wait += self.last_wait;
        }
        self.last_wait = 0.0;
    }

    fn add_step(&mut self, shape: ShapeKey, seconds: f64, clips: u64) {
        let e = self.shapes.entry(shape).or_default();
        e.steps += 1;
        e.seconds += seconds;
        e.clips += clips;
    }

    /// The `timing` metrics line. `work` is clips x frames x crop^2 summed over steps, what the
    /// multigrid paper scales the batch by; `macs` the forward pass's multiply-adds (`macs_of`
    /// frames and crop, per clip), which fall more slowly than `work` at small crops.
    fn line(&self, precise_seconds: f64, macs_of: impl Fn(i64, i64) -> f64) -> Record {
        let shapes = self
            .shapes
            .iter()
            .map(|(&(stage, t, s, n), e)| ShapeTiming {
                stage,
                frames: t as u64,
                crop: s as u64,
                batch: n as u64,
                steps: e.steps,
                seconds: e.seconds,
                clips: e.clips,
                data_wait_s: e.data_wait,
                work: e.clips as f64 * t as f64 * (s * s) as f64,
                macs: Some(e.clips as f64 * macs_of(t, s)),
            })
            .collect();
        Record::Timing(TimingRecord {
            shapes,
            step_s: self.shapes.values().map(|v| v.seconds).sum::<f64>(),
            data_wait_s: self.data_s,
            eval_s: self.eval_s,
            checkpoint_s: self.checkpoint_s,
            precise_bn_s: precise_seconds - self.precise_at_start,
            grad_reduce_s: 0.0,
            cuda_graphs: 0,
        })
    }
}
