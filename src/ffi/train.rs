//! C API of the trainer. Present in every build; without libtorch (`--no-default-features`)
//! each call returns MG_STATUS_UNSUPPORTED.
//!
//! Threads: a trainer may move between threads. Calls through a `const mg_trainer *` only read
//! it and may overlap each other; any other call needs the trainer to itself. Every entry point
//! checks that (`Calls`), because the one overlap a correct-looking program makes is a progress
//! callback calling back into the trainer that runs it: that would be a second `&mut` of a
//! trainer in the middle of a step, and mg_trainer_free from there a use after free.

use std::ffi::c_char;

#[cfg(feature = "torch")]
use super::error::{c_str, non_null};
use super::error::{guard, mg_status, out_ptr, FfiError};
use super::versioned::{self, AnyBits, Versioned};

/// A trainer of the config's network (`model.arch`) over its schedule. Create with `mg_trainer_new`, free with
/// `mg_trainer_free`.
pub struct mg_trainer {
    #[cfg(feature = "torch")]
    calls: Calls,
    /// Reached only through the guards of `Calls`, which hand out `&mut` to one call at a time
    /// and `&` to readers while no call that changes it runs. An UnsafeCell because a callback
    /// re-entering with the same pointer must be able to look at `calls` (through `&mg_trainer`)
    /// while the running call holds `&mut Trainer`: a `&mut mg_trainer` could not allow that.
    #[cfg(feature = "torch")]
    inner: std::cell::UnsafeCell<crate::train::Trainer>,
}

/// Every entry point's access to a trainer (see the module's doc).
#[cfg(feature = "torch")]
mod access {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::mg_trainer;
    use crate::ffi::error::FfiError;

    /// The calls inside one trainer: the low bits count readers, WRITING marks a call that
    /// changes it. A try-lock: a call that would have to wait is refused instead, since the one
    /// that holds the trainer may be the caller's own frame further up (a progress callback).
    pub(super) struct Calls {
        state: AtomicUsize,
        /// The entry point that last took WRITING, named in the message of a call refused for it.
        writer: Mutex<&'static str>,
    }

    const WRITING: usize = 1 << (usize::BITS - 1);

    impl Calls {
        pub(super) fn new() -> Self {
            Calls {
                state: AtomicUsize::new(0),
                writer: Mutex::new(""),
            }
        }

        fn writer(&self) -> &'static str {
            *self.writer.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// Takes the trainer for a call that changes it.
        pub(super) fn claim(&self, name: &'static str) -> Result<(), FfiError> {
            match self
                .state
                .compare_exchange(0, WRITING, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => {
                    *self.writer.lock().unwrap_or_else(|e| e.into_inner()) = name;
                    Ok(())
                }
                Err(s) if s & WRITING != 0 => Err(FfiError::Busy(format!(
                    "the trainer is inside {}: a call on a trainer cannot start while a call that \
                     changes it runs (from its progress callback, or on another thread)",
                    self.writer()
                ))),
                Err(s) => Err(FfiError::Busy(format!(
                    "{} const call(s) on other threads are reading the trainer: a call that changes \
                     it needs it to itself",
                    s & !WRITING
                ))),
            }
        }

        fn release(&self) {
            // Not a store of 0: a reader refused meanwhile may not have taken its count back yet.
            self.state.fetch_and(!WRITING, Ordering::Release);
        }

        /// Counts a reader in, unless a call that changes the trainer runs.
        fn read(&self) -> Result<(), FfiError> {
            let s = self.state.fetch_add(1, Ordering::Acquire);
            if s & WRITING != 0 {
                self.state.fetch_sub(1, Ordering::Relaxed);
                return Err(FfiError::Busy(format!(
                    "the trainer is inside {}: a const query cannot run during a call that changes \
                     the trainer (from its progress callback, or on another thread); make it before \
                     or after that call",
                    self.writer()
                )));
            }
            Ok(())
        }
    }

    /// The trainer for one call that changes it; released on drop, unwinding included.
    pub(super) struct Exclusive<'a>(&'a mg_trainer);

    impl Drop for Exclusive<'_> {
        fn drop(&mut self) {
            self.0.calls.release();
        }
    }

    /// The trainer for one const query.
    pub(super) struct Shared<'a>(&'a mg_trainer);

    impl Drop for Shared<'_> {
        fn drop(&mut self) {
            self.0.calls.state.fetch_sub(1, Ordering::Release);
        }
    }

    fn handle<'a>(t: *const mg_trainer) -> Result<&'a mg_trainer, FfiError> {
        // SAFETY: a non-NULL trainer is a live handle by contract. Only `&` is ever made of an
        // mg_trainer while it lives, so a re-entrant call's `&` aliases nothing mutable.
        unsafe { t.as_ref() }.ok_or(FfiError::Null("trainer"))
    }

    pub(super) fn exclusive<'a>(
        t: *mut mg_trainer,
        name: &'static str,
    ) -> Result<Exclusive<'a>, FfiError> {
        let t = handle(t)?;
        t.calls.claim(name)?;
        Ok(Exclusive(t))
    }

    pub(super) fn shared<'a>(t: *const mg_trainer) -> Result<Shared<'a>, FfiError> {
        let t = handle(t)?;
        t.calls.read()?;
        Ok(Shared(t))
    }

    impl std::ops::Deref for Exclusive<'_> {
        type Target = crate::train::Trainer;
        fn deref(&self) -> &Self::Target {
            // SAFETY: this guard holds WRITING: no other guard of this trainer exists.
            unsafe { &*self.0.inner.get() }
        }
    }

    impl std::ops::DerefMut for Exclusive<'_> {
        fn deref_mut(&mut self) -> &mut Self::Target {
            // SAFETY: as in deref; `&mut self` keeps this the only reference made from the guard.
            unsafe { &mut *self.0.inner.get() }
        }
    }

    impl std::ops::Deref for Shared<'_> {
        type Target = crate::train::Trainer;
        fn deref(&self) -> &Self::Target {
            // SAFETY: no Exclusive exists while a reader is counted in, so nothing mutates it.
            unsafe { &*self.0.inner.get() }
        }
    }
}

#[cfg(feature = "torch")]
use access::{exclusive, shared, Calls};

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
/// average precisions only for a multi-label task (`data.multi_label`). Versioned (see the
/// preamble): `mg_summary s; s.struct_size = sizeof s;` before the call.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct mg_summary {
    /// In: sizeof(mg_summary) in the caller's header. Out: the bytes the library wrote; a
    /// field that ends past it was not written (the library predates it).
    pub struct_size: usize,
    pub wall_seconds: f64,
    /// The plan position reached: mg_trainer_next_step after the fit.
    pub steps: u64,
    pub clips_seen: u64,
    pub val_top1: f64,
    pub val_top5: f64,
    pub val_map: f64,
    pub test_top1: f64,
    pub test_top5: f64,
    pub test_map: f64,
    /// The run stopped before the end of the plan, after writing a checkpoint: the progress
    /// callback returned non-zero, or a preemption notice came (`preempted`). No final test
    /// then.
    pub cancelled: bool,
    /// The signal of the preemption notice (SIGTERM, SIGUSR1) that stopped the run; 0 when
    /// none did. The library installs no handler: `multigrid train` does, a host process
    /// decides for itself.
    pub preempted: i32,
}

// SAFETY: repr(C), struct_size first. No AnyBits: it holds a bool, and is only written.
unsafe impl Versioned for mg_summary {
    const NAME: &'static str = "mg_summary";
    // The end of the first layout with struct_size, which ended with `preempted`: fields
    // appended later leave it where it is.
    const FIRST_SIZE: usize =
        std::mem::offset_of!(mg_summary, preempted) + std::mem::size_of::<i32>();
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
/// checkpoint, and `mg_trainer_fit` returns MG_STATUS_OK with `cancelled` set in its summary.
/// It must not call mg_trainer_* on the trainer that runs it (they give MG_STATUS_BUSY); other
/// handles are fine.
pub type mg_progress_fn =
    Option<extern "C" fn(user_data: *mut std::ffi::c_void, progress: *const mg_progress) -> i32>;

#[cfg(feature = "torch")]
fn new_handle(inner: crate::train::Trainer) -> *mut mg_trainer {
    Box::into_raw(Box::new(mg_trainer {
        calls: Calls::new(),
        inner: std::cell::UnsafeCell::new(inner),
    }))
}

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
            *out = new_handle(inner);
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        {
            let _ = (config_json, output_dir, out);
            unsupported()
        }
    })
}

/// Distributed settings of `mg_trainer_new_dist`. Start from `mg_dist_options_default(&o,
/// sizeof o)`, which leaves every field to the config's `run` section and the launcher's
/// environment (torchrun's RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE / MASTER_ADDR /
/// MASTER_PORT, mpirun's OMPI_COMM_WORLD_*, srun's SLURM_PROCID / SLURM_NTASKS /
/// SLURM_LOCALID), and set the ones to give explicitly. Versioned (see the preamble).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mg_dist_options {
    /// sizeof(mg_dist_options) in the caller's header; mg_dist_options_default sets it.
    pub struct_size: usize,
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

// SAFETY: repr(C), struct_size first; pointers, integers and a float take any bits.
unsafe impl Versioned for mg_dist_options {
    const NAME: &'static str = "mg_dist_options";
    // The end of the first layout with struct_size, which ended with `timeout_s`.
    const FIRST_SIZE: usize =
        std::mem::offset_of!(mg_dist_options, timeout_s) + std::mem::size_of::<f64>();
}
unsafe impl AnyBits for mg_dist_options {}

impl Default for mg_dist_options {
    /// Everything from the config and the environment.
    fn default() -> Self {
        mg_dist_options {
            struct_size: std::mem::size_of::<mg_dist_options>(),
            backend: std::ptr::null(),
            init_method: std::ptr::null(),
            rank: -1,
            world_size: -1,
            local_rank: -1,
            local_world_size: -1,
            timeout_s: 0.0,
        }
    }
}

/// Fills `*out`, whose type has `struct_size` bytes in the caller's header (pass `sizeof
/// *out`), with "everything from the config and the environment", and sets its struct_size.
#[no_mangle]
pub extern "C" fn mg_dist_options_default(
    out: *mut mg_dist_options,
    struct_size: usize,
) -> mg_status {
    guard("mg_dist_options_default", || {
        versioned::write_default(out, struct_size, "out", &mg_dist_options::default())
    })
}

#[cfg(feature = "torch")]
fn dist_options(
    config: &crate::Config,
    o: &mg_dist_options,
) -> Result<crate::distributed::DistOptions, FfiError> {
    let mut d = crate::train::dist_options(&config.run)?;
    if !o.backend.is_null() {
        d.backend = crate::distributed::Backend::parse(c_str(o.backend, "backend")?)?;
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
        if !(o.timeout_s.is_finite() && o.timeout_s <= crate::schedule::config::MAX_DIST_TIMEOUT_S)
        {
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
            // Before the config: a struct_size never set is the likelier mistake to report.
            let given = (!dist.is_null())
                .then(|| versioned::read_in(dist, "dist", mg_dist_options::default()))
                .transpose()?;
            let config = crate::Config::from_json(c_str(config_json, "config_json")?)?;
            let dir = c_str(output_dir, "output_dir")?;
            let options = match given {
                None => crate::train::dist_options(&config.run)?,
                Some(o) => dist_options(&config, &o)?,
            };
            let inner =
                crate::train::Trainer::with_dist(config, std::path::Path::new(dir), &options)?;
            *out = new_handle(inner);
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
    trainer: *const mg_trainer,
    rank: *mut u32,
    world_size: *mut u32,
) -> mg_status {
    guard("mg_trainer_rank", || {
        let rank = out_ptr(rank, "rank")?;
        let world_size = out_ptr(world_size, "world_size")?;
        #[cfg(feature = "torch")]
        {
            let t = shared(trainer)?;
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

/// Frees a trainer; NULL is a no-op. Called while a call on the trainer runs (from its progress
/// callback) it frees nothing, since that call would go on with freed memory, and sets the last
/// error.
#[no_mangle]
pub extern "C" fn mg_trainer_free(trainer: *mut mg_trainer) {
    super::error::guard_value("mg_trainer_free", (), || {
        #[cfg(feature = "torch")]
        {
            // SAFETY: a non-NULL trainer is a live handle by contract.
            if let Some(t) = unsafe { trainer.as_ref() } {
                // Taken for good, never released: nothing may enter between this and the free.
                if let Err(e) = t.calls.claim("mg_trainer_free") {
                    super::error::report("mg_trainer_free", &e);
                    return;
                }
            }
        }
        super::error::free_box("mg_trainer_free", trainer);
    })
}

/// Loads the newest checkpoint in the output directory; `*resumed` says whether one existed.
/// With several ranks every rank calls it and loads the checkpoint rank 0 found.
#[no_mangle]
pub extern "C" fn mg_trainer_resume(trainer: *mut mg_trainer, resumed: *mut bool) -> mg_status {
    guard("mg_trainer_resume", || {
        let resumed = out_ptr(resumed, "resumed")?;
        #[cfg(feature = "torch")]
        {
            *resumed = exclusive(trainer, "mg_trainer_resume")?.resume()?;
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
pub extern "C" fn mg_trainer_next_step(trainer: *const mg_trainer, step: *mut u64) -> mg_status {
    guard("mg_trainer_next_step", || {
        let step = out_ptr(step, "step")?;
        #[cfg(feature = "torch")]
        {
            *step = shared(trainer)?.next_step();
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        {
            let _ = (trainer, step);
            unsupported()
        }
    })
}

/// Makes SIGTERM and SIGUSR1 preemption notices for this process, as `multigrid train` does
/// (Slurm's `--signal`, Kubernetes' termination): a running mg_trainer_fit then finishes its
/// step, writes a checkpoint with the other ranks and returns MG_STATUS_OK with
/// `out->preempted` set. It replaces the process's handlers for those two signals; a host that
/// keeps its own calls mg_request_preemption from them instead. Returns MG_STATUS_OK: its one
/// failure, sigaction refusing one of these two signals (INVALID_ARGUMENT), POSIX rules out.
#[no_mangle]
pub extern "C" fn mg_preemption_install() -> mg_status {
    guard("mg_preemption_install", || {
        #[cfg(feature = "torch")]
        {
            let s = crate::distributed::signals::PREEMPTION;
            crate::distributed::signals::install(&s)?;
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        {
            unsupported()
        }
    })
}

/// Records `signal` as a preemption notice, as the handler mg_preemption_install sets does: one
/// atomic store, safe inside a signal handler (Python's signal handlers run only between
/// bytecodes, never during mg_trainer_fit: install ours instead). A build without libtorch
/// ignores it.
#[no_mangle]
pub extern "C" fn mg_request_preemption(signal: i32) {
    #[cfg(feature = "torch")]
    crate::distributed::signals::request(signal);
    #[cfg(not(feature = "torch"))]
    let _ = signal;
}

/// Trains from the next step to the end of the schedule: the loader prepares batches in the
/// background, evaluation and checkpoints follow the schedule's epochs, a final test runs at
/// the end. `progress` may be NULL. A non-zero return of `progress` stops the run after that
/// step (a checkpoint is written) and the call returns MG_STATUS_OK with `out->cancelled` set,
/// as does a preemption notice (`out->preempted`). With several ranks every rank calls it, and
/// a non-zero return on any rank cancels all of them after the same step: the next log point
/// (every `run.log_period` steps, and at evaluations and checkpoints), where the ranks agree on
/// it without a collective at every step. `out->struct_size` must be set (see the preamble).
#[no_mangle]
pub extern "C" fn mg_trainer_fit(
    trainer: *mut mg_trainer,
    progress: mg_progress_fn,
    user_data: *mut std::ffi::c_void,
    out: *mut mg_summary,
) -> mg_status {
    guard("mg_trainer_fit", || {
        // Checked before the training, which it would otherwise follow by hours.
        let out = versioned::Out::new(out, "out")?;
        #[cfg(feature = "torch")]
        {
            let mut t = exclusive(trainer, "mg_trainer_fit")?;
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
                a.map_or((f64::NAN, f64::NAN, f64::NAN), |a| {
                    (a.top1, a.top5, a.map.unwrap_or(f64::NAN))
                })
            };
            let (val_top1, val_top5, val_map) = acc(s.final_val);
            let (test_top1, test_top5, test_map) = acc(s.test);
            out.write(&mg_summary {
                struct_size: std::mem::size_of::<mg_summary>(),
                wall_seconds: s.wall_seconds,
                steps: s.steps,
                clips_seen: s.clips_seen,
                val_top1,
                val_top5,
                val_map,
                test_top1,
                test_top5,
                test_map,
                cancelled: s.cancelled,
                preempted: s.preempted.unwrap_or(0),
            });
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        {
            let _ = (trainer, progress, user_data, out);
            unsupported()
        }
    })
}

/// The slow and fast host arrays of a step, checked and on the trainer's device; also N. A
/// single-pathway network (mg_schedule_collate_alpha 0) takes `slow` and `slow_shape` NULL,
/// and gets an empty slow tensor.
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
    let one_pathway = t.config().model.collate_alpha() == 0;
    let (fs, fast_n) = shape(fast_shape, "fast_shape")?;
    let device = t.device();
    if one_pathway && (!slow.is_null() || !slow_shape.is_null()) {
        return Err(FfiError::Invalid(format!(
            "model.arch {} takes one pathway: slow and slow_shape must be NULL",
            t.config().model.arch
        )));
    }
    let (ss, slow_n) = if one_pathway {
        ([fs[0], 3, 0, fs[3], fs[4]], 0)
    } else {
        shape(slow_shape, "slow_shape")?
    };
    if ss[0] != fs[0] {
        return Err(FfiError::Invalid(format!(
            "slow {ss:?} and fast {fs:?} disagree on N"
        )));
    }
    let tensor = |p: *const f32,
                  s: [i64; 5],
                  n: usize,
                  name: &'static str|
     -> Result<tch::Tensor, FfiError> {
        if n == 0 {
            let torch = |e: tch::TchError| FfiError::Lib(e.into());
            return tch::Tensor::f_zeros(s, (tch::Kind::Float, device)).map_err(torch);
        }
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
/// shapes as int64 arrays of 5; a single-pathway `model.arch`, whose mg_schedule_collate_alpha
/// is 0, takes the clip as `fast` and NULL `slow` and `slow_shape`), `labels` N class indices. `bn_groups` 0 and a negative `lr`
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
            let mut t = exclusive(trainer, "mg_trainer_train_step")?;
            let (groups, lr) = plan_or(bn_groups, lr)?;
            let (slow, fast, n) = host_inputs(&t, slow, slow_shape, fast, fast_shape)?;
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
            let mut t = exclusive(trainer, "mg_trainer_train_step_targets")?;
            let (groups, lr) = plan_or(bn_groups, lr)?;
            let classes = t.config().model.num_classes;
            if num_classes != classes {
                return Err(FfiError::Invalid(format!(
                    "num_classes {num_classes} is not the model's {classes} (model.num_classes)"
                )));
            }
            let (slow, fast, n) = host_inputs(&t, slow, slow_shape, fast, fast_shape)?;
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
            let mut t = exclusive(trainer, "mg_trainer_evaluate")?;
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
            exclusive(trainer, "mg_trainer_save")?.save_checkpoint()?;
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
            exclusive(trainer, "mg_trainer_load")?.load_checkpoint(std::path::Path::new(dir))?;
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        {
            let _ = (trainer, checkpoint_dir);
            unsupported()
        }
    })
}

/// mg_trainer_init_from's `flags`: load what maps and list the rest in the report (the model's
/// tensors that keep their initial values, the file's that map to nothing), as PySlowFast's
/// loader prints them, instead of failing naming them; for a 2D ImageNet ResNet, whose weights
/// cover only the slow pathway of a SlowFast.
pub const MG_INIT_SKIP_MISSING: u32 = 1;

/// Initialises the model from another run's weights, as PySlowFast's TRAIN.CHECKPOINT_FILE_PATH
/// (fine-tuning: the optimizer, plan position and clock start afresh; a classifier of another
/// class count is re-initialised). `path`: our checkpoint directory or `.safetensors`, a
/// PySlowFast `.pyth`, a PySlowFast Caffe2 `.pkl` (CHECKPOINT_TYPE caffe2), or a 2D ImageNet
/// ResNet with torchvision's names (`.pth` or `.safetensors`), inflated to 3D as PySlowFast
/// inflates; `.pyth`, `.pkl` and `.pth` are read by the package's Python (scripts/pyth.py,
/// needs torch). `flags`: 0 or MG_INIT_SKIP_MISSING. What was loaded: mg_trainer_init_report.
/// With several ranks every rank calls it; rank 0 reads the file and its values are
/// broadcast. Errors: MG_STATUS_NULL_ARGUMENT, MG_STATUS_INVALID_ARGUMENT (an unknown flag; a
/// path that is no checkpoint; tensors that do not map, named, without MG_INIT_SKIP_MISSING),
/// MG_STATUS_DATA (a checkpoint or file that cannot be parsed or converted), MG_STATUS_IO (a
/// file that cannot be read), MG_STATUS_TORCH, MG_STATUS_BUSY.
#[no_mangle]
pub extern "C" fn mg_trainer_init_from(
    trainer: *mut mg_trainer,
    path: *const c_char,
    flags: u32,
) -> mg_status {
    guard("mg_trainer_init_from", || {
        #[cfg(feature = "torch")]
        {
            let file = c_str(path, "path")?;
            if flags & !MG_INIT_SKIP_MISSING != 0 {
                return Err(FfiError::Invalid(format!(
                    "flags {flags:#x}: only MG_INIT_SKIP_MISSING (1) is defined"
                )));
            }
            let opts = crate::train::checkpoint::InitOptions {
                skip_missing: flags & MG_INIT_SKIP_MISSING != 0,
            };
            exclusive(trainer, "mg_trainer_init_from")?
                .init_from_with(std::path::Path::new(file), opts)?;
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        {
            let _ = (trainer, path, flags);
            unsupported()
        }
    })
}

/// Copies what the last mg_trainer_init_from loaded, as JSON (`source`, `loaded`,
/// `reinitialised`, `checkpoint_classes`, `notes`, `inflated`, `skipped`, `unused`), into `buf`
/// like mg_last_error_message: NUL-terminated, truncated to `len`, returns the full length
/// (call with NULL and 0 to size the buffer); 0 before any init_from, on a NULL trainer, and
/// during a call that changes the trainer (that one sets the last error: MG_STATUS_BUSY's).
/// Rank 0 reads the file and has the report; other ranks, which receive the weights by
/// broadcast, report nothing loaded.
#[no_mangle]
pub extern "C" fn mg_trainer_init_report(
    trainer: *const mg_trainer,
    buf: *mut c_char,
    len: usize,
) -> usize {
    #[cfg(feature = "torch")]
    return text_query("mg_trainer_init_report", trainer, buf, len, |t| {
        t.init_report()
            .and_then(|r| serde_json::to_string(r).ok())
            .unwrap_or_default()
    });
    #[cfg(not(feature = "torch"))]
    super::error::guard_value("mg_trainer_init_report", 0, || {
        let _ = (trainer, buf, len);
        0
    })
}

/// A trainer query that copies text out as mg_last_error_message does: 0 on a NULL trainer,
/// for an empty text, and during a call that changes the trainer (which sets the last error,
/// MG_STATUS_BUSY's).
#[cfg(feature = "torch")]
fn text_query(
    name: &'static str,
    trainer: *const mg_trainer,
    buf: *mut c_char,
    len: usize,
    text: impl FnOnce(&crate::train::Trainer) -> String,
) -> usize {
    super::error::guard_value(name, 0, || {
        if trainer.is_null() {
            return 0;
        }
        match shared(trainer) {
            Ok(t) => super::error::copy_out(&text(&t), buf, len),
            Err(e) => {
                super::error::report(name, &e);
                0
            }
        }
    })
}

/// Copies the last metrics line (JSON) into `buf` like mg_last_error_message: NUL-terminated,
/// truncated to `len`, returns the full length; 0 when nothing was logged, on a NULL trainer,
/// and during a call that changes the trainer (that one sets the last error: MG_STATUS_BUSY's).
#[no_mangle]
pub extern "C" fn mg_trainer_last_metrics(
    trainer: *const mg_trainer,
    buf: *mut c_char,
    len: usize,
) -> usize {
    #[cfg(feature = "torch")]
    return text_query("mg_trainer_last_metrics", trainer, buf, len, |t| {
        match t.last_metrics() {
            serde_json::Value::Null => String::new(),
            v => v.to_string(),
        }
    });
    #[cfg(not(feature = "torch"))]
    super::error::guard_value("mg_trainer_last_metrics", 0, || {
        let _ = (trainer, buf, len);
        0
    })
}
