//! C API of the trainer. Present in every build; without libtorch (`--no-default-features`)
//! each call returns MG_STATUS_UNSUPPORTED.
//!
//! Threads: a trainer may move between threads but must not be used by two at once; every
//! function here takes it exclusively. The progress callback runs on the calling thread.

use std::ffi::c_char;

#[cfg(feature = "torch")]
use super::error::{c_str, non_null};
use super::error::{guard, mg_status, out_ptr, FfiError};

/// A SlowFast trainer over a config's schedule. Create with `mg_trainer_new`, free with
/// `mg_trainer_free`.
pub struct mg_trainer {
    #[cfg(feature = "torch")]
    inner: crate::train::Trainer,
}

/// Passed to the progress callback after every step.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct mg_progress {
    pub step: u64,
    pub total_steps: u64,
    /// This rank's loss at the latest log point: the loss stays on the device between them and
    /// is read every `run.log_period` steps, at evaluations and checkpoints, and at the first
    /// and last step of the fit, so in between the value repeats.
    pub loss: f64,
    pub lr: f64,
    pub epoch: u32,
}

/// The end of `mg_trainer_fit`. Accuracies are percentages, NaN when not measured; the mean
/// average precisions only for a multi-label task (`data.multi_label`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct mg_summary {
    pub wall_seconds: f64,
    pub steps: u64,
    pub clips_seen: u64,
    pub val_top1: f64,
    pub val_top5: f64,
    pub test_top1: f64,
    pub test_top5: f64,
    pub cancelled: bool,
    pub val_map: f64,
    pub test_map: f64,
}

/// Top-1 and top-5 accuracy in percent over `clips` clips; for a multi-label task the share
/// whose top-1 (top-5) scores include one of their classes, and `map`, the mean average
/// precision in percent (NaN for a single-label task).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct mg_accuracy {
    pub top1: f64,
    pub top5: f64,
    pub clips: u64,
    pub map: f64,
}

/// Called after every step with `user_data`; a non-zero return stops training cleanly after a
/// checkpoint, and `mg_trainer_fit` returns MG_STATUS_CANCELLED.
pub type mg_progress_fn =
    Option<extern "C" fn(user_data: *mut std::ffi::c_void, progress: *const mg_progress) -> i32>;

#[cfg(not(feature = "torch"))]
fn unsupported() -> Result<(), FfiError> {
    Err(FfiError::Lib(crate::Error::Unsupported(
        "this libmultigrid was built without libtorch (--no-default-features)".into(),
    )))
}

/// Builds a trainer from a JSON config (see configs/; `run.data_dir` names the data) writing
/// metrics and checkpoints under `output_dir`.
#[no_mangle]
pub extern "C" fn mg_trainer_new(
    config_json: *const c_char,
    output_dir: *const c_char,
    out: *mut *mut mg_trainer,
) -> mg_status {
    guard("mg_trainer_new", || {
        let out = out_ptr(out, "out")?;
        #[cfg(feature = "torch")]
        {
            let config = crate::Config::from_json(c_str(config_json, "config_json")?)?;
            let dir = c_str(output_dir, "output_dir")?;
            let inner = crate::train::Trainer::new(config, std::path::Path::new(dir))?;
            *out = Box::into_raw(Box::new(mg_trainer { inner }));
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        {
            let _ = (config_json, output_dir, out);
            unsupported()
        }
    })
}

/// Distributed settings of `mg_trainer_new_dist`. Start from `mg_dist_options_default`, which
/// leaves every field to the config's `run` section and the launcher's environment (torchrun's
/// RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE / MASTER_ADDR / MASTER_PORT, mpirun's
/// OMPI_COMM_WORLD_*, srun's SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID), and set the ones to
/// give explicitly.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mg_dist_options {
    /// "auto", "nccl" or "mpi"; NULL: the config's run.dist_backend.
    pub backend: *const c_char,
    /// "env://", "tcp://HOST:PORT" or "file:///PATH" (NCCL ranks' rendezvous); NULL: the
    /// config's run.dist_init_method.
    pub init_method: *const c_char,
    /// This process's rank; -1: from the environment (0 without a launcher).
    pub rank: i32,
    /// Ranks in the job; -1: from the environment (1 without a launcher).
    pub world_size: i32,
    /// Rank on this machine (the CUDA device index); -1: from the environment, else `rank`.
    pub local_rank: i32,
    /// Ranks on this machine (they split its CPU cores); -1: from the environment, else
    /// `world_size`.
    pub local_world_size: i32,
    /// Seconds a collective may wait for the other ranks before this process exits non-zero;
    /// <= 0: the config's run.dist_timeout_s.
    pub timeout_s: f64,
}

/// Fills `*out` with "everything from the config and the environment".
#[no_mangle]
pub extern "C" fn mg_dist_options_default(out: *mut mg_dist_options) -> mg_status {
    guard("mg_dist_options_default", || {
        *out_ptr(out, "out")? = mg_dist_options {
            backend: std::ptr::null(),
            init_method: std::ptr::null(),
            rank: -1,
            world_size: -1,
            local_rank: -1,
            local_world_size: -1,
            timeout_s: 0.0,
        };
        Ok(())
    })
}

#[cfg(feature = "torch")]
fn dist_options(
    config: &crate::Config,
    o: &mg_dist_options,
) -> Result<crate::dist::DistOptions, FfiError> {
    let mut d = crate::train::dist_options(&config.run)?;
    if !o.backend.is_null() {
        d.backend = crate::dist::Backend::parse(c_str(o.backend, "backend")?)?;
    }
    if !o.init_method.is_null() {
        d.init_method = c_str(o.init_method, "init_method")?.to_string();
    }
    let field = |v: i32, name: &str| -> Result<Option<usize>, FfiError> {
        match v {
            -1 => Ok(None),
            v if v >= 0 => Ok(Some(v as usize)),
            v => Err(FfiError::Lib(crate::Error::InvalidArgument(format!(
                "mg_dist_options.{name} is {v}: give a value >= 0, or -1 for the environment's"
            )))),
        }
    };
    d.rank = field(o.rank, "rank")?;
    d.world_size = field(o.world_size, "world_size")?;
    d.local_rank = field(o.local_rank, "local_rank")?;
    d.local_world_size = field(o.local_world_size, "local_world_size")?;
    if o.timeout_s > 0.0 {
        if !(o.timeout_s.is_finite() && o.timeout_s <= 86_400.0) {
            return Err(FfiError::Lib(crate::Error::InvalidArgument(format!(
                "mg_dist_options.timeout_s is {}: at most 86400 seconds",
                o.timeout_s
            ))));
        }
        d.timeout = std::time::Duration::from_secs_f64(o.timeout_s);
    } else if o.timeout_s.is_nan() {
        return Err(FfiError::Lib(crate::Error::InvalidArgument(
            "mg_dist_options.timeout_s is NaN".into(),
        )));
    }
    Ok(d)
}

/// `mg_trainer_new` as one rank of a data-parallel job. Every rank calls it (and then the same
/// trainer functions in the same order): rank 0's parameters are broadcast, gradients are
/// averaged over ranks after every backward, evaluation is sharded, and rank 0 alone writes
/// metrics and checkpoints. `dist` NULL is `mg_dist_options_default`. CUDA ranks use NCCL on
/// device cuda:local_rank; CPU ranks use MPI and must be started by an MPI launcher.
#[no_mangle]
pub extern "C" fn mg_trainer_new_dist(
    config_json: *const c_char,
    output_dir: *const c_char,
    dist: *const mg_dist_options,
    out: *mut *mut mg_trainer,
) -> mg_status {
    guard("mg_trainer_new_dist", || {
        let out = out_ptr(out, "out")?;
        #[cfg(feature = "torch")]
        {
            let config = crate::Config::from_json(c_str(config_json, "config_json")?)?;
            let dir = c_str(output_dir, "output_dir")?;
            let options = if dist.is_null() {
                crate::train::dist_options(&config.run)?
            } else {
                dist_options(&config, non_null(dist, "dist")?)?
            };
            let inner =
                crate::train::Trainer::with_dist(config, std::path::Path::new(dir), &options)?;
            *out = Box::into_raw(Box::new(mg_trainer { inner }));
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        {
            let _ = (config_json, output_dir, dist, out);
            unsupported()
        }
    })
}

/// This trainer's rank and the job's number of ranks (0 and 1 for a single process).
#[no_mangle]
pub extern "C" fn mg_trainer_rank(
    trainer: *mut mg_trainer,
    rank: *mut u32,
    world_size: *mut u32,
) -> mg_status {
    guard("mg_trainer_rank", || {
        let rank = out_ptr(rank, "rank")?;
        let world_size = out_ptr(world_size, "world_size")?;
        #[cfg(feature = "torch")]
        {
            let t = trainer_mut(trainer)?;
            *rank = t.rank() as u32;
            *world_size = t.world_size() as u32;
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        {
            let _ = (trainer, rank, world_size);
            unsupported()
        }
    })
}

/// Frees a trainer; NULL is a no-op.
#[no_mangle]
pub extern "C" fn mg_trainer_free(trainer: *mut mg_trainer) {
    super::error::free_box("mg_trainer_free", trainer);
}

#[cfg(feature = "torch")]
fn trainer_mut<'a>(t: *mut mg_trainer) -> Result<&'a mut crate::train::Trainer, FfiError> {
    Ok(&mut out_ptr(t, "trainer")?.inner)
}

/// Loads the newest checkpoint in the output directory; `*resumed` says whether one existed.
/// With several ranks every rank calls it and loads the checkpoint rank 0 found.
#[no_mangle]
pub extern "C" fn mg_trainer_resume(trainer: *mut mg_trainer, resumed: *mut bool) -> mg_status {
    guard("mg_trainer_resume", || {
        let resumed = out_ptr(resumed, "resumed")?;
        #[cfg(feature = "torch")]
        {
            *resumed = trainer_mut(trainer)?.resume()?;
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        {
            let _ = (trainer, resumed);
            unsupported()
        }
    })
}

/// The plan step the trainer runs next: 0 on a new run, the checkpoint's after a resume or load,
/// advanced by mg_trainer_train_step and mg_trainer_fit.
#[no_mangle]
pub extern "C" fn mg_trainer_next_step(trainer: *mut mg_trainer, step: *mut u64) -> mg_status {
    guard("mg_trainer_next_step", || {
        let step = out_ptr(step, "step")?;
        #[cfg(feature = "torch")]
        {
            *step = trainer_mut(trainer)?.next_step();
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        {
            let _ = (trainer, step);
            unsupported()
        }
    })
}

/// Trains from the next step to the end of the schedule: the loader prepares batches in the
/// background, evaluation and checkpoints follow the schedule's epochs, a final test runs at
/// the end. `progress` may be NULL. A non-zero return of `progress` cancels after that step
/// (a checkpoint is written). With several ranks every rank calls it, and a non-zero return
/// on any rank cancels all of them after the same step: the next log point (every
/// `run.log_period` steps, and at evaluations and checkpoints), where the ranks agree on it
/// without a collective at every step.
#[no_mangle]
pub extern "C" fn mg_trainer_fit(
    trainer: *mut mg_trainer,
    progress: mg_progress_fn,
    user_data: *mut std::ffi::c_void,
    out: *mut mg_summary,
) -> mg_status {
    guard("mg_trainer_fit", || {
        let out = out_ptr(out, "out")?;
        #[cfg(feature = "torch")]
        {
            let t = trainer_mut(trainer)?;
            let s = t.fit(&mut |p| {
                let cp = mg_progress {
                    step: p.step,
                    total_steps: p.total_steps,
                    loss: p.loss,
                    lr: p.lr,
                    epoch: p.epoch,
                };
                progress.is_some_and(|f| f(user_data, &cp) != 0)
            })?;
            let acc = |a: Option<crate::train::Accuracy>| {
                a.map_or((f64::NAN, f64::NAN), |a| (a.top1, a.top5))
            };
            let (v1, v5) = acc(s.final_val);
            let (t1, t5) = acc(s.test);
            let map = |a: Option<crate::train::Accuracy>| a.and_then(|a| a.map).unwrap_or(f64::NAN);
            *out = mg_summary {
                wall_seconds: s.wall_seconds,
                steps: s.steps,
                clips_seen: s.clips_seen,
                val_top1: v1,
                val_top5: v5,
                test_top1: t1,
                test_top5: t5,
                cancelled: s.cancelled,
                val_map: map(s.final_val),
                test_map: map(s.test),
            };
            if s.cancelled {
                return Err(FfiError::Lib(crate::Error::Cancelled(format!(
                    "stopped by the progress callback after step {}; a checkpoint was written",
                    s.steps
                ))));
            }
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        {
            let _ = (trainer, progress, user_data, out);
            unsupported()
        }
    })
}

/// The slow and fast host arrays of a step, checked and on the trainer's device; also N.
#[cfg(feature = "torch")]
fn host_inputs(
    t: &crate::train::Trainer,
    slow: *const f32,
    slow_shape: *const i64,
    fast: *const f32,
    fast_shape: *const i64,
) -> Result<(tch::Tensor, tch::Tensor, i64), FfiError> {
    // Shape and element count, checked before any caller memory is read; the trainer checks
    // what the network needs (see SlowFast::check_input).
    let shape = |p: *const i64, name: &'static str| -> Result<([i64; 5], usize), FfiError> {
        non_null(p, name)?;
        // SAFETY: the caller promises five int64 values.
        let s = unsafe { *p.cast::<[i64; 5]>() };
        if s.iter().any(|&d| d <= 0) || s[1] != 3 {
            return Err(FfiError::Invalid(format!(
                "{name} {s:?} is not [N, 3, T, H, W] with positive sizes"
            )));
        }
        let n = s
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
            .filter(|&n| n <= isize::MAX as usize / std::mem::size_of::<f32>())
            .ok_or_else(|| {
                FfiError::Invalid(format!("{name} {s:?} holds more floats than memory"))
            })?;
        Ok((s, n))
    };
    let ((ss, slow_n), (fs, fast_n)) = (
        shape(slow_shape, "slow_shape")?,
        shape(fast_shape, "fast_shape")?,
    );
    if ss[0] != fs[0] {
        return Err(FfiError::Invalid(format!(
            "slow {ss:?} and fast {fs:?} disagree on N"
        )));
    }
    let device = t.device();
    let tensor = |p: *const f32,
                  s: [i64; 5],
                  n: usize,
                  name: &'static str|
     -> Result<tch::Tensor, FfiError> {
        non_null(p, name)?;
        // SAFETY: the caller promises the product of the shape in floats (n, checked).
        let data = unsafe { std::slice::from_raw_parts(p, n) };
        let torch = |e: tch::TchError| FfiError::Lib(e.into());
        tch::Tensor::f_from_slice(data)
            .and_then(|x| x.f_view(s))
            .and_then(|x| x.f_to_device(device))
            .map_err(torch)
    };
    Ok((
        tensor(slow, ss, slow_n, "slow")?,
        tensor(fast, fs, fast_n, "fast")?,
        fs[0],
    ))
}

/// `bn_groups` 0 and a negative `lr` mean "the plan's"; NaN means nothing at all.
#[cfg(feature = "torch")]
fn plan_or(bn_groups: u32, lr: f64) -> Result<(Option<i64>, Option<f64>), FfiError> {
    if lr.is_nan() {
        return Err(FfiError::Invalid("lr is NaN".into()));
    }
    Ok((
        (bn_groups > 0).then_some(i64::from(bn_groups)),
        (lr >= 0.0).then_some(lr),
    ))
}

/// One SGD step on a host batch: `slow` [N, 3, Ts, S, S] and `fast` [N, 3, T, S, S] (f32,
/// shapes as int64 arrays of 5), `labels` N class indices. `bn_groups` 0 and a negative `lr`
/// take the plan's values at the trainer's position (mg_trainer_next_step), which advances by
/// one, so checkpoints and resume line up with mg_trainer_fit. `*loss` receives the
/// cross-entropy. With several ranks every rank calls it with its own shard's batch of the
/// same shape (gradients are averaged over ranks before the update). A multi-label task takes
/// mg_trainer_train_step_targets instead.
#[no_mangle]
pub extern "C" fn mg_trainer_train_step(
    trainer: *mut mg_trainer,
    slow: *const f32,
    slow_shape: *const i64,
    fast: *const f32,
    fast_shape: *const i64,
    labels: *const i64,
    bn_groups: u32,
    lr: f64,
    loss: *mut f64,
) -> mg_status {
    guard("mg_trainer_train_step", || {
        let loss = out_ptr(loss, "loss")?;
        #[cfg(feature = "torch")]
        {
            let t = trainer_mut(trainer)?;
            let (groups, lr) = plan_or(bn_groups, lr)?;
            let (slow, fast, n) = host_inputs(t, slow, slow_shape, fast, fast_shape)?;
            non_null(labels, "labels")?;
            // SAFETY: the caller promises N labels.
            let lab = unsafe { std::slice::from_raw_parts(labels, n as usize) };
            // On the host: host_step checks them there, then uploads them.
            let lab = tch::Tensor::f_from_slice(lab).map_err(|e| FfiError::Lib(e.into()))?;
            *loss = t.host_step(&slow, &fast, &lab, groups, lr)?;
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        {
            let _ = (
                trainer, slow, slow_shape, fast, fast_shape, labels, bn_groups, lr, loss,
            );
            unsupported()
        }
    })
}

/// mg_trainer_train_step for a multi-label task (`data.multi_label`, `model.loss_func`
/// `bce_logit`): `targets` holds N x `num_classes` floats in [0, 1] (multi-hot, row-major;
/// `num_classes` must equal `model.num_classes`), and `*loss` receives the binary
/// cross-entropy on the logits, the mean over clips and classes.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn mg_trainer_train_step_targets(
    trainer: *mut mg_trainer,
    slow: *const f32,
    slow_shape: *const i64,
    fast: *const f32,
    fast_shape: *const i64,
    targets: *const f32,
    num_classes: u32,
    bn_groups: u32,
    lr: f64,
    loss: *mut f64,
) -> mg_status {
    guard("mg_trainer_train_step_targets", || {
        let loss = out_ptr(loss, "loss")?;
        #[cfg(feature = "torch")]
        {
            let t = trainer_mut(trainer)?;
            let (groups, lr) = plan_or(bn_groups, lr)?;
            let classes = t.config().model.num_classes;
            if num_classes != classes {
                return Err(FfiError::Invalid(format!(
                    "num_classes {num_classes} is not the model's {classes} (model.num_classes)"
                )));
            }
            let (slow, fast, n) = host_inputs(t, slow, slow_shape, fast, fast_shape)?;
            non_null(targets, "targets")?;
            let len = (n as usize)
                .checked_mul(classes as usize)
                .ok_or_else(|| FfiError::Invalid("N x num_classes overflows".into()))?;
            // SAFETY: the caller promises N x num_classes floats.
            let tg = unsafe { std::slice::from_raw_parts(targets, len) };
            let tg = tch::Tensor::f_from_slice(tg)
                .and_then(|x| x.f_view([n, i64::from(classes)]))
                .map_err(|e| FfiError::Lib(e.into()))?;
            *loss = t.host_step(&slow, &fast, &tg, groups, lr)?;
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        {
            let _ = (
                trainer,
                slow,
                slow_shape,
                fast,
                fast_shape,
                targets,
                num_classes,
                bn_groups,
                lr,
                loss,
            );
            unsupported()
        }
    })
}

/// Accuracy on `split` of the config's data directory, without precise BN: "test" scores the
/// configured K x C views, any other split follows `run.val_protocol` at the base shape
/// (`train`: one training-style clip per video; `centre`: the centred clip at the test crop). With several ranks every rank calls it: each scores its share of
/// the clips and every rank receives the totals.
#[no_mangle]
pub extern "C" fn mg_trainer_evaluate(
    trainer: *mut mg_trainer,
    split: *const c_char,
    out: *mut mg_accuracy,
) -> mg_status {
    guard("mg_trainer_evaluate", || {
        let out = out_ptr(out, "out")?;
        #[cfg(feature = "torch")]
        {
            let t = trainer_mut(trainer)?;
            let split = c_str(split, "split")?;
            let a = t.evaluate_named(split)?;
            *out = mg_accuracy {
                top1: a.top1,
                top5: a.top5,
                clips: a.clips as u64,
                map: a.map.unwrap_or(f64::NAN),
            };
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        {
            let _ = (trainer, split, out);
            unsupported()
        }
    })
}

/// Writes a checkpoint of the current state under the output directory. With several ranks every
/// rank calls it: BN statistics are pooled over the ranks, rank 0 writes, and all return once
/// the checkpoint is complete.
#[no_mangle]
pub extern "C" fn mg_trainer_save(trainer: *mut mg_trainer) -> mg_status {
    guard("mg_trainer_save", || {
        #[cfg(feature = "torch")]
        {
            trainer_mut(trainer)?.save_checkpoint()?;
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        {
            let _ = trainer;
            unsupported()
        }
    })
}

/// Loads the checkpoint directory `checkpoint_dir` (parameters, BN buffers, optimizer state,
/// plan position). With several ranks every rank calls it (rank 0's values are then broadcast).
#[no_mangle]
pub extern "C" fn mg_trainer_load(
    trainer: *mut mg_trainer,
    checkpoint_dir: *const c_char,
) -> mg_status {
    guard("mg_trainer_load", || {
        #[cfg(feature = "torch")]
        {
            let dir = c_str(checkpoint_dir, "checkpoint_dir")?;
            trainer_mut(trainer)?.load_checkpoint(std::path::Path::new(dir))?;
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        {
            let _ = (trainer, checkpoint_dir);
            unsupported()
        }
    })
}

/// Copies the last metrics line (JSON) into `buf` like mg_last_error_message: NUL-terminated,
/// truncated to `len`, returns the full length; 0 when nothing was logged or on a NULL trainer.
#[no_mangle]
pub extern "C" fn mg_trainer_last_metrics(
    trainer: *const mg_trainer,
    buf: *mut c_char,
    len: usize,
) -> usize {
    super::error::guard_value("mg_trainer_last_metrics", 0, || {
        #[cfg(feature = "torch")]
        {
            // SAFETY: a non-NULL trainer is a live handle by contract.
            let Some(t) = (unsafe { trainer.as_ref() }) else {
                return 0;
            };
            let text = match t.inner.last_metrics() {
                serde_json::Value::Null => String::new(),
                v => v.to_string(),
            };
            super::error::copy_out(&text, buf, len)
        }
        #[cfg(not(feature = "torch"))]
        {
            let _ = (trainer, buf, len);
            0
        }
    })
}
