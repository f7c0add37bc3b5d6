//! The multigrid trainer: one SlowFast model for the whole run; each plan step brings its own
//! shape, LR and BN group count, and nothing is rebuilt when they change.

pub mod amp;
pub mod checkpoint;
pub mod metrics;
pub mod optim;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tch::{nn, Device, Kind, Tensor};

use crate::collate::{self, batch_len, eval_params, slow_indices, Rng, ViewMode};
use crate::data::{Batch, Dataset, Loader, LoaderOptions};
use crate::error::{Error, Result};
use crate::model::SlowFast;
use crate::plan::Plan;
use crate::schedule::{Config, Schedule};
use amp::{LossScaler, Precision};
use checkpoint::Manifest;
use metrics::Metrics;
use optim::Sgd;

fn torch(e: tch::TchError) -> Error {
    Error::Torch(e.to_string())
}

fn loss_value(loss: &Tensor, step: u64) -> Result<f64> {
    let v = loss.f_double_value(&[]).map_err(torch)?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Error::InvalidArgument(format!(
            "loss is {v} at step {step}"
        )))
    }
}

/// Fails before any training when a planned frame count does not suit SlowFast: the slow
/// pathway takes T / alpha frames and the lateral fusion conv (temporal stride alpha) yields
/// ceil(T / alpha), so both agree only when alpha divides T; PySlowFast finds out mid-run.
fn check_model_fits_schedule(schedule: &Schedule) -> Result<()> {
    let alpha = schedule.config().model.alpha;
    let t0 = schedule.config().data.num_frames;
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

/// Resolves `auto`, `cpu`, `cuda`, `cuda:N`.
pub fn parse_device(name: &str) -> Result<Device> {
    let cuda = |n: usize| {
        if tch::Cuda::is_available() && n < tch::Cuda::device_count() as usize {
            Ok(Device::Cuda(n))
        } else {
            Err(Error::InvalidArgument(format!(
                "device {name} requested but CUDA is not available ({} devices)",
                tch::Cuda::device_count()
            )))
        }
    };
    match name {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => cuda(n),
            None => Err(Error::InvalidArgument(format!("unknown device {other:?}"))),
        },
    }
}

/// Opens `dir/split.mgstore` when present, else the video list `dir/split.csv`.
pub fn open_split(dir: &Path, split: &str) -> Result<Dataset> {
    let store = dir.join(format!("{split}.mgstore"));
    if store.exists() {
        Dataset::store(store)
    } else {
        Dataset::video_list(dir, split)
    }
}

/// Top-1 and top-5 accuracy in percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accuracy {
    pub top1: f64,
    pub top5: f64,
    pub clips: usize,
}

/// What a progress callback sees after each step.
#[derive(Debug, Clone)]
pub struct Progress {
    pub step: u64,
    pub total_steps: u64,
    pub epoch: u32,
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
    pub cancelled: bool,
}

pub struct Trainer {
    config: Config,
    schedule: Schedule,
    device: Device,
    vs: nn::VarStore,
    model: SlowFast,
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
}

/// A training batch on the device, its host-to-device copy possibly still in flight.
struct Staged {
    batch: Batch,
    slow: Tensor,
    fast: Tensor,
    labels: Tensor,
}

impl Trainer {
    /// Builds the model and opens `run.data_dir`'s train split; writes under `out_dir`.
    pub fn new(config: Config, out_dir: &Path) -> Result<Trainer> {
        let schedule = Schedule::new(config.clone())?;
        let device = parse_device(&config.run.device)?;
        let precision = Precision::resolve(&config.run.precision, device)?;
        check_model_fits_schedule(&schedule)?;
        let data_dir = PathBuf::from(&config.run.data_dir);
        let train = Arc::new(open_split(&data_dir, "train")?);
        let plan = Arc::new(Plan::new(
            &schedule,
            train.len() as u64,
            1,
            0,
            config.run.seed,
        )?);
        if device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(config.run.cudnn_benchmark);
        }
        tch::manual_seed(config.run.seed as i64);
        let vs = nn::VarStore::new(device);
        let model = SlowFast::new(&vs.root(), &config.model);
        let opt = Sgd::new(&vs, &config.solver);
        std::fs::create_dir_all(out_dir).map_err(|source| Error::Io {
            path: out_dir.to_path_buf(),
            source,
        })?;
        let metrics = Metrics::open(&out_dir.join("metrics.jsonl"))?;
        Ok(Trainer {
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
        })
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
    pub fn next_step(&self) -> u64 {
        self.next_step
    }
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    pub fn last_metrics(&self) -> &serde_json::Value {
        &self.metrics.last
    }

    fn checkpoint_root(&self) -> PathBuf {
        self.out_dir.join("checkpoints")
    }

    /// Loads the newest checkpoint under the output directory; false when there is none.
    pub fn resume(&mut self) -> Result<bool> {
        match checkpoint::list(&self.checkpoint_root())?.pop() {
            Some((_, dir)) => {
                self.load_checkpoint(&dir)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let m = checkpoint::read_manifest(dir)?;
        self.vs.load(dir.join(&m.model)).map_err(torch)?;
        let state = Tensor::read_safetensors(dir.join(&m.optimizer)).map_err(torch)?;
        let state = state
            .into_iter()
            .map(|(k, t)| (k, t.to_device(self.device)))
            .collect();
        let mut state: Vec<(String, Tensor)> = state;
        let mut scaler = LossScaler::default();
        scaler.take_state(&mut state)?;
        if let Some(s) = &mut self.scaler {
            *s = scaler;
        }
        self.opt.load_state(state)?;
        self.next_step = m.step;
        self.clips_seen = m.clips_seen;
        self.wall_before = m.wall_seconds;
        self.clock = Instant::now();
        Ok(())
    }

    /// Wall-clock seconds of the run: this trainer's lifetime plus a resumed run's past.
    pub fn wall_seconds(&self) -> f64 {
        self.wall_before + self.clock.elapsed().as_secs_f64()
    }

    /// Writes a checkpoint of the current position under the output directory.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let wall_seconds = self.wall_seconds();
        let epoch = self
            .plan
            .step(self.next_step.min(self.plan.total_steps() - 1))
            .map_or(0, |s| s.epoch);
        let manifest = Manifest {
            step: self.next_step,
            epoch,
            wall_seconds,
            clips_seen: self.clips_seen,
            model: "model.safetensors".into(),
            optimizer: "optimizer.safetensors".into(),
            seed: self.config.run.seed,
            config: self.config.clone(),
        };
        checkpoint::save(
            &self.checkpoint_root(),
            &manifest,
            self.config.run.keep_checkpoints,
            |dir| {
                self.vs.save(dir.join("model.safetensors")).map_err(torch)?;
                let mut state = self.opt.state();
                if let Some(s) = &self.scaler {
                    state.extend(s.state());
                }
                let named: Vec<(&str, &Tensor)> =
                    state.iter().map(|(k, t)| (k.as_str(), t)).collect();
                Tensor::write_safetensors(&named, dir.join("optimizer.safetensors")).map_err(torch)
            },
        )
    }

    fn inputs(
        &self,
        slow: &[f32],
        fast: &[f32],
        n: i64,
        t: i64,
        s: i64,
    ) -> Result<(Tensor, Tensor)> {
        let ts = slow_indices(t as u32, self.config.model.alpha).len() as i64;
        Ok((
            self.upload(slow, &[n, 3, ts, s, s])?,
            self.upload(fast, &[n, 3, t, s, s])?,
        ))
    }

    /// A host buffer on the device. On CUDA it goes through pinned memory with a non-blocking
    /// copy, so the transfer overlaps the kernels already queued.
    fn upload<T: tch::kind::Element>(&self, host: &[T], shape: &[i64]) -> Result<Tensor> {
        if !self.device.is_cuda() {
            return Tensor::f_from_slice(host)
                .and_then(|x| x.f_view(shape))
                .map_err(torch);
        }
        let numel: i64 = shape.iter().product();
        if numel != host.len() as i64 {
            return Err(Error::InvalidArgument(format!(
                "{} values for shape {shape:?}",
                host.len()
            )));
        }
        // Straight into pinned memory: one host copy, not a pageable tensor and then a pin.
        let pinned = Tensor::f_empty(shape, (T::KIND, Device::Cpu))
            .and_then(|t| t.f_pin_memory(self.device))
            .map_err(torch)?;
        // SAFETY: `pinned` is a fresh contiguous CPU tensor of numel elements of kind T, and
        // `host` holds exactly numel values (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(host.as_ptr(), pinned.data_ptr().cast::<T>(), host.len())
        };
        pinned
            .f_to_device_(self.device, T::KIND, true, false)
            .map_err(torch)
    }

    /// The loader's next batch, on its way to the device; None at the end of the plan.
    fn next_staged(&self, loader: &mut Loader) -> Result<Option<Staged>> {
        loader
            .next_batch()
            .map(|b| b.and_then(|b| self.stage(b)))
            .transpose()
    }

    fn stage(&self, batch: Batch) -> Result<Staged> {
        let n = batch.len() as i64;
        let (t, s) = (i64::from(batch.num_frames), i64::from(batch.crop_size));
        let (slow, fast) =
            self.inputs(batch.slow.as_deref().unwrap_or(&[]), &batch.fast, n, t, s)?;
        let labels = self.upload(&batch.labels, &[n])?;
        Ok(Staged {
            batch,
            slow,
            fast,
            labels,
        })
    }

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
    /// the dropout seed line up with a `fit` run.
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
        if groups < 1 || n % groups != 0 {
            return Err(Error::InvalidArgument(format!(
                "bn_groups {groups} must divide the batch of {n} clips"
            )));
        }
        let loss = self.train_step(slow, fast, labels, groups, lr, step)?;
        self.next_step += 1;
        self.clips_seen += n as u64;
        Ok(loss)
    }

    /// Cross-entropy of a training-mode forward pass, under the run's autocast.
    fn training_loss(
        &self,
        slow: &Tensor,
        fast: &Tensor,
        labels: &Tensor,
        bn_groups: i64,
    ) -> Result<Tensor> {
        amp::autocast(self.device, self.precision, || {
            self.model
                .forward(slow, fast, bn_groups, true)
                .f_cross_entropy_loss::<Tensor>(labels, None, tch::Reduction::Mean, -100, 0.0)
        })
        .map_err(torch)
    }

    /// Queues forward, backward and the update without waiting for the device (except with
    /// fp16, whose overflow check reads the gradients back); the loss stays on the device.
    fn launch_step(
        &mut self,
        slow: &Tensor,
        fast: &Tensor,
        labels: &Tensor,
        bn_groups: i64,
        lr: f64,
        step: u64,
    ) -> Result<Tensor> {
        tch::manual_seed((self.config.run.seed ^ step.wrapping_mul(0x9E37_79B9)) as i64 & i64::MAX);
        let loss = self.training_loss(slow, fast, labels, bn_groups)?;
        self.opt.zero_grad();
        match &mut self.scaler {
            None => {
                loss.f_backward().map_err(torch)?;
                self.opt.step(lr);
            }
            Some(scaler) => {
                scaler.scale_loss(&loss).f_backward().map_err(torch)?;
                let finite = scaler.unscale(&self.opt.grads())?;
                if finite {
                    self.opt.step(lr);
                }
                scaler.update(finite);
            }
        }
        Ok(loss.detach())
    }

    /// One forward and backward at every shape still ahead in the plan, and one evaluation
    /// forward, so that cuDNN autotuning and allocator growth happen before the first step.
    /// Parameters, BN statistics and the optimizer state are restored, so training is the same
    /// with or without it.
    pub fn warm_up(&mut self) -> Result<usize> {
        let shapes = self.plan.shapes_from(self.next_step);
        let buffers: Vec<(Tensor, Tensor)> = self
            .vs
            .variables()
            .into_values()
            .filter(|t| !t.requires_grad())
            .map(|t| {
                let saved = t.copy();
                (t, saved)
            })
            .collect();
        let alpha = self.config.model.alpha;
        let input = |n: u32, t: u32, s: u32| {
            let ts = slow_indices(t, alpha).len() as i64;
            let (n, t, s) = (i64::from(n), i64::from(t), i64::from(s));
            let opts = (Kind::Float, self.device);
            (
                Tensor::f_randn([n, 3, ts, s, s], opts),
                Tensor::f_randn([n, 3, t, s, s], opts),
            )
        };
        for &[n, t, s, groups] in &shapes {
            let (slow, fast) = input(n, t, s);
            let (slow, fast) = (slow.map_err(torch)?, fast.map_err(torch)?);
            let labels =
                Tensor::f_zeros([i64::from(n)], (Kind::Int64, self.device)).map_err(torch)?;
            let loss = self.training_loss(&slow, &fast, &labels, i64::from(groups))?;
            loss.f_backward().map_err(torch)?;
        }
        let (t, s) = (self.config.data.num_frames, self.config.data.test_crop_size);
        let (slow, fast) = input(self.config.run.eval_batch_size as u32, t, s);
        let (slow, fast) = (slow.map_err(torch)?, fast.map_err(torch)?);
        let _ = tch::no_grad(|| {
            amp::autocast(self.device, self.precision, || {
                self.model.forward(&slow, &fast, 1, false)
            })
        });
        self.opt.zero_grad();
        tch::no_grad(|| {
            for (live, saved) in &buffers {
                live.shallow_clone().copy_(saved);
            }
        });
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
        self.warmed_up = true;
        Ok(shapes.len())
    }

    /// Trains from the next step to the end of the plan (or until `progress` returns true, which
    /// cancels after a checkpoint).
    pub fn fit(&mut self, progress: &mut dyn FnMut(&Progress) -> bool) -> Result<Summary> {
        let total = self.plan.total_steps();
        let alpha = self.config.model.alpha;
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
            self.metrics.write(json!({
                "type": "warmup", "shapes": shapes, "seconds": t0.elapsed().as_secs_f64(),
            }))?;
        }
        let mut window = (Instant::now(), 0u64, 0.0f64);
        let mut final_val = None;
        let mut cancelled = false;
        let mut next = self.next_staged(&mut loader)?;
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
            let loss = self.launch_step(
                &slow,
                &fast,
                &labels,
                i64::from(step.bn_groups),
                step.lr,
                step.step,
            )?;
            // The next batch goes to the device while this step's kernels run; reading the loss
            // is what waits for them.
            next = self.next_staged(&mut loader)?;
            let loss = loss_value(&loss, step.step)?;
            self.next_step = step.step + 1;
            self.clips_seen += n as u64;
            window.1 += n as u64;
            window.2 += loss;
            let wall = self.wall_seconds();
            if (step.step + 1) % self.config.run.log_period == 0 || step.eval_after {
                let secs = window.0.elapsed().as_secs_f64();
                let stats = loader.stats();
                self.metrics.write(json!({
                    "type": "train", "step": step.step, "epoch": step.epoch, "stage": step.stage,
                    "shape": [n, t, s], "bn_groups": step.bn_groups, "lr": step.lr, "loss": loss,
                    "clips_per_s": window.1 as f64 / secs.max(1e-9), "data_wait_s": stats.wait_seconds,
                    "data_failures": stats.failures, "wall_s": wall, "clips_seen": self.clips_seen,
                }))?;
                window = (Instant::now(), 0, 0.0);
            }
            if step.eval_after {
                let acc = self.evaluate_split("val", ViewMode::Val)?;
                let wall = self.wall_seconds();
                if let Some(a) = acc {
                    self.metrics.write(json!({
                        "type": "eval", "split": "val", "step": step.step, "epoch": step.epoch,
                        "top1": a.top1, "top5": a.top5, "clips": a.clips, "wall_s": wall,
                        "clips_seen": self.clips_seen,
                    }))?;
                }
                final_val = acc;
            }
            let cancel = progress(&Progress {
                step: step.step,
                total_steps: total,
                epoch: step.epoch,
                loss,
                lr: step.lr,
            });
            if step.checkpoint_after || cancel {
                self.save_checkpoint()?;
            }
            if cancel {
                cancelled = true;
                break;
            }
        }
        drop(loader);
        let test = if cancelled { None } else { self.test()? };
        let wall = self.wall_seconds();
        let summary = Summary {
            wall_seconds: wall,
            steps: self.next_step,
            clips_seen: self.clips_seen,
            final_val,
            test,
            cancelled,
        };
        self.metrics.write(json!({
            "type": "summary", "wall_s": wall, "steps": summary.steps, "clips_seen": summary.clips_seen,
            "top1": final_val.map(|a| a.top1), "top5": final_val.map(|a| a.top5),
            "test_top1": test.map(|a| a.top1), "test_top5": test.map(|a| a.top5), "cancelled": cancelled,
        }))?;
        Ok(summary)
    }

    /// PySlowFast's precise BN: running statistics recomputed as the average over training
    /// batches at the current stage's base shape.
    fn precise_bn(&mut self) -> Result<()> {
        let batches = self.config.run.precise_bn_batches;
        if !self.config.run.precise_bn || batches == 0 {
            return Ok(());
        }
        let step = self.plan.step(self.next_step.saturating_sub(1))?;
        let stage = self.schedule.stages()[step.stage as usize];
        let (t, s) = (stage.num_frames, stage.crop_size);
        let n = (stage.batch_factor * self.config.train.batch_size) as usize;
        let bn = self.model.batch_norms();
        bn.iter().for_each(|b| b.reset_running_stats());
        let data = &self.config.data;
        let norm = collate::normalize_of(&self.plan);
        let [jmin, jmax] = self.schedule.jitter_scales(s);
        let rate = self.schedule.sampling_rate_range(step.stage as usize);
        let mut pick = Rng::new(self.config.run.seed ^ 0xB17, u64::from(step.epoch), 0);
        let one = batch_len(1, t, s);
        let groups = i64::from(self.schedule.bn_grouping(step.stage as usize, 1).groups);
        for i in 0..batches {
            let mut fast = vec![0f32; n * one];
            for k in 0..n {
                let index = pick.int_inclusive(0, (self.train.len() - 1) as u32) as usize;
                let mut rng = Rng::new(self.config.run.seed ^ 0xB17, i as u64, index as u64);
                let choose = |f, h, w| {
                    collate::train_params(
                        &mut rng,
                        f,
                        h,
                        w,
                        t,
                        s,
                        rate,
                        [jmin, jmax],
                        data.inv_uniform_sample,
                        data.random_flip,
                    )
                };
                // A clip that fails to decode is left out of the average (zeros).
                let _ = self.train.collate_clip(
                    index,
                    t,
                    s,
                    &norm,
                    choose,
                    &mut fast[k * one..(k + 1) * one],
                );
            }
            let ts = slow_indices(t, self.config.model.alpha).len();
            let mut slow = vec![0f32; batch_len(n, ts as u32, s)];
            collate::pack_slow(&fast, n, t, s, self.config.model.alpha, &mut slow)?;
            let (slow, fast) = self.inputs(&slow, &fast, n as i64, i64::from(t), i64::from(s))?;
            bn.iter()
                .for_each(|b| b.set_momentum(1.0 / (i as f64 + 1.0)));
            let _ = tch::no_grad(|| self.model.forward(&slow, &fast, groups, true));
        }
        bn.iter()
            .for_each(|b| b.set_momentum(crate::model::bn::MOMENTUM));
        Ok(())
    }

    fn evaluate_split(&mut self, split: &str, mode: ViewMode) -> Result<Option<Accuracy>> {
        let dir = PathBuf::from(&self.config.run.data_dir);
        let dataset = match open_split(&dir, split) {
            Ok(d) => d,
            Err(_) => return Ok(None),
        };
        self.precise_bn()?;
        self.evaluate(&dataset, mode).map(Some)
    }

    /// Accuracy on the data directory's `split` ("test": the configured K x C views; any other
    /// split: a centred view), without precise BN.
    pub fn evaluate_named(&mut self, split: &str) -> Result<Accuracy> {
        let dataset = open_split(Path::new(&self.config.run.data_dir), split)?;
        let mode = if split == "test" {
            ViewMode::Test {
                temporal: 0,
                num_temporal: self.config.run.test_num_temporal_views,
                spatial: self.config.run.test_num_spatial_crops,
            }
        } else {
            ViewMode::Val
        };
        self.evaluate(&dataset, mode)
    }

    /// Final test: K temporal x up to 3 spatial views per clip, softmax averaged.
    fn test(&mut self) -> Result<Option<Accuracy>> {
        let dir = PathBuf::from(&self.config.run.data_dir);
        let Ok(dataset) = open_split(&dir, "test") else {
            return Ok(None);
        };
        self.precise_bn()?;
        let k = self.config.run.test_num_temporal_views;
        let crops = self.config.run.test_num_spatial_crops;
        self.evaluate(
            &dataset,
            ViewMode::Test {
                temporal: k,
                num_temporal: k,
                spatial: crops,
            },
        )
        .map(Some)
    }

    /// Accuracy on `dataset` at the default shape (T0 frames, the test crop): a centred view for
    /// `ViewMode::Val`; for `ViewMode::Test { num_temporal: K, spatial: C, .. }` all K x C
    /// views, with softmax scores summed.
    pub fn evaluate(&mut self, dataset: &Dataset, mode: ViewMode) -> Result<Accuracy> {
        let (t, s) = (self.config.data.num_frames, self.config.data.test_crop_size);
        let rate = self.config.data.sampling_rate;
        let views: Vec<ViewMode> = match mode {
            ViewMode::Val => vec![ViewMode::Val],
            ViewMode::Test {
                num_temporal,
                spatial,
                ..
            } => {
                let crops: Vec<u32> = if spatial >= 3 { vec![0, 1, 2] } else { vec![1] };
                (0..num_temporal)
                    .flat_map(|k| {
                        crops.iter().map(move |&c| ViewMode::Test {
                            temporal: k,
                            num_temporal,
                            spatial: c,
                        })
                    })
                    .collect()
            }
        };
        let norm = collate::normalize_of(&self.plan);
        let one = batch_len(1, t, s);
        let bs = self.config.run.eval_batch_size;
        let alpha = self.config.model.alpha;
        let ts = slow_indices(t, alpha).len() as u32;
        let (mut top1, mut top5, mut count) = (0usize, 0usize, 0usize);
        let indices: Vec<usize> = (0..dataset.len()).collect();
        for chunk in indices.chunks(bs) {
            let n = chunk.len();
            let mut scores: Option<Tensor> = None;
            for view in &views {
                let mut fast = vec![0f32; n * one];
                for (k, &i) in chunk.iter().enumerate() {
                    let choose = |f, h, w| eval_params(*view, f, h, w, t, s, rate);
                    dataset.collate_clip(
                        i,
                        t,
                        s,
                        &norm,
                        choose,
                        &mut fast[k * one..(k + 1) * one],
                    )?;
                }
                let mut slow = vec![0f32; batch_len(n, ts, s)];
                collate::pack_slow(&fast, n, t, s, alpha, &mut slow)?;
                let (slow, fast) =
                    self.inputs(&slow, &fast, n as i64, i64::from(t), i64::from(s))?;
                let p = tch::no_grad(|| {
                    self.model
                        .forward(&slow, &fast, 1, false)
                        .softmax(-1, Kind::Float)
                });
                scores = Some(match scores {
                    Some(acc) => acc + p,
                    None => p,
                });
            }
            let Some(scores) = scores else { continue };
            let labels: Vec<i64> = chunk
                .iter()
                .map(|&i| dataset.label(i).map(i64::from))
                .collect::<Result<_>>()?;
            let labels = Tensor::from_slice(&labels).to_device(self.device);
            let k5 = scores.size()[1].min(5);
            let (_, top) = scores.topk(k5, 1, true, true);
            let hit = top.eq_tensor(&labels.unsqueeze(1));
            top1 += hit.narrow(1, 0, 1).sum(Kind::Int64).int64_value(&[]) as usize;
            top5 += hit.sum(Kind::Int64).int64_value(&[]) as usize;
            count += n;
        }
        let pct = |h: usize| 100.0 * h as f64 / count.max(1) as f64;
        Ok(Accuracy {
            top1: pct(top1),
            top5: pct(top5),
            clips: count,
        })
    }
}
