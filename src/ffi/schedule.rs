//! C API of the schedule: a pure function of the config JSON.

use std::ffi::c_char;

use super::error::{c_str, guard, mg_status, non_null, out_ptr, FfiError};
use crate::schedule::Schedule;

/// An immutable Multigrid schedule. Create with `mg_schedule_new`, free with
/// `mg_schedule_free`.
pub struct mg_schedule {
    pub(crate) inner: Schedule,
}

/// One long-cycle stage: epochs [`start_epoch`, `end_epoch`) at base shape
/// (`batch_factor` x train.batch_size clips, `num_frames`, `crop_size`). Without the long
/// cycle there is one stage at the default shape.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct mg_stage {
    /// Index of the baseline LR stage; the fine-tune stage has the number of LR stages.
    pub lr_stage: u32,
    /// Global batch relative to train.batch_size.
    pub batch_factor: u32,
    /// Global clips per batch at the base shape: batch_factor x train.batch_size.
    pub base_batch_size: u32,
    pub num_frames: u32,
    pub crop_size: u32,
    pub start_epoch: u32,
    pub end_epoch: u32,
    /// Largest temporal stride of the stage (the smallest is data.sampling_rate).
    pub sampling_rate_max: u32,
    /// Short-cycle phases per cycle: 3 with the short cycle, else 1.
    pub num_short_cycle_phases: u32,
    /// Multiples of the stage's per-rank base batch for each phase (unused entries 0).
    pub short_cycle_batch_factors: [u32; 3],
    /// Crop of each phase (unused entries 0).
    pub short_cycle_crops: [u32; 3],
}

/// Parses and validates `config_json` (the JSON config, see configs/) and derives the
/// schedule into `*out`. Errors: MG_STATUS_NULL_ARGUMENT, MG_STATUS_INVALID_CONFIG (the
/// message names the key and value).
#[no_mangle]
pub extern "C" fn mg_schedule_new(
    config_json: *const c_char,
    out: *mut *mut mg_schedule,
) -> mg_status {
    guard("mg_schedule_new", || {
        let out = out_ptr(out, "out")?;
        let json = c_str(config_json, "config_json")?;
        let inner = Schedule::from_json(json)?;
        *out = Box::into_raw(Box::new(mg_schedule { inner }));
        Ok(())
    })
}

/// Applies `num_sets` overrides `SECTION.KEY=VALUE` in order to `config_json` (the CLI's
/// `--set`; PySlowFast's trailing opts: keys are case-insensitive, VALUE is JSON or else a
/// string) and writes the resulting config, every key spelled out, NUL-terminated into `buf`
/// (room for `capacity` bytes), its length without the NUL into `*len`. With `capacity` too
/// small (`buf` may then be NULL), returns MG_STATUS_BUFFER_TOO_SMALL, writes nothing to `buf`
/// and sets `*len` to the length needed (allocate `*len + 1`). `sets` may be NULL when
/// `num_sets` is 0. Errors: MG_STATUS_INVALID_CONFIG (the config, or an override: malformed,
/// an unknown section or key, a value the config refuses; the message names it).
#[no_mangle]
pub extern "C" fn mg_config_apply_overrides(
    config_json: *const c_char,
    sets: *const *const c_char,
    num_sets: usize,
    buf: *mut c_char,
    capacity: usize,
    len: *mut usize,
) -> mg_status {
    guard("mg_config_apply_overrides", || {
        let json = c_str(config_json, "config_json")?;
        let len = out_ptr(len, "len")?;
        if num_sets > 0 && sets.is_null() {
            return Err(FfiError::Null("sets"));
        }
        let overrides = (0..num_sets)
            // SAFETY: `sets` holds `num_sets` pointers by contract (checked non-NULL above).
            .map(|i| c_str(unsafe { *sets.add(i) }, "sets[i]"))
            .collect::<Result<Vec<&str>, FfiError>>()?;
        let mut config = crate::Config::from_json(json)?;
        config.apply_overrides(&overrides)?;
        let text = config.to_json_string();
        if text.len() >= capacity {
            *len = text.len();
            return Err(FfiError::Lib(crate::Error::BufferTooSmall(format!(
                "the config is {} bytes and a NUL, but the buffer holds {capacity}",
                text.len()
            ))));
        }
        if buf.is_null() {
            return Err(FfiError::Null("buf"));
        }
        // SAFETY: `buf` holds `capacity` > text.len() bytes by contract.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
            *buf.add(text.len()) = 0;
        }
        *len = text.len();
        Ok(())
    })
}

/// Frees a schedule; NULL is a no-op. Plans made from it stay valid.
#[no_mangle]
pub extern "C" fn mg_schedule_free(schedule: *mut mg_schedule) {
    super::error::free_box("mg_schedule_free", schedule);
}

/// Number of stages (13 for the Kinetics multigrid config).
#[no_mangle]
pub extern "C" fn mg_schedule_num_stages(
    schedule: *const mg_schedule,
    out: *mut usize,
) -> mg_status {
    guard("mg_schedule_num_stages", || {
        let s = non_null(schedule, "schedule")?;
        *out_ptr(out, "out")? = s.inner.stages().len();
        Ok(())
    })
}

/// Stage `index` (0-based). Errors: MG_STATUS_OUT_OF_RANGE past the last stage.
#[no_mangle]
pub extern "C" fn mg_schedule_stage(
    schedule: *const mg_schedule,
    index: usize,
    out: *mut mg_stage,
) -> mg_status {
    guard("mg_schedule_stage", || {
        let s = &non_null(schedule, "schedule")?.inner;
        let out = out_ptr(out, "out")?;
        let n = s.stages().len();
        if index >= n {
            return Err(FfiError::Lib(crate::Error::OutOfRange(format!(
                "stage index {index} is past the last stage ({n} stages)"
            ))));
        }
        let st = s.stages()[index];
        let factors = s.short_cycle_batch_factors(index);
        let crops = s.short_cycle_crops(index);
        let mut stage = mg_stage {
            lr_stage: st.lr_stage,
            batch_factor: st.batch_factor,
            base_batch_size: st.batch_factor * s.config().train.batch_size,
            num_frames: st.num_frames,
            crop_size: st.crop_size,
            start_epoch: s.stage_start(index),
            end_epoch: st.end_epoch,
            sampling_rate_max: s.sampling_rate_range(index)[1],
            num_short_cycle_phases: factors.len() as u32,
            ..mg_stage::default()
        };
        stage.short_cycle_batch_factors[..factors.len()].copy_from_slice(&factors);
        stage.short_cycle_crops[..crops.len()].copy_from_slice(&crops);
        *out = stage;
        Ok(())
    })
}

/// Training epochs after the multigrid overrides (358 for Kinetics).
#[no_mangle]
pub extern "C" fn mg_schedule_max_epoch(schedule: *const mg_schedule, out: *mut u32) -> mg_status {
    guard("mg_schedule_max_epoch", || {
        let s = non_null(schedule, "schedule")?;
        *out_ptr(out, "out")? = s.inner.max_epoch();
        Ok(())
    })
}

/// The `alpha` to pass to mg_collate_step, mg_collate_step_len and the dataset loaders for
/// this config's network: `model.alpha` for SlowFast (two pathways: slow and fast), 0 for a
/// single-pathway `model.arch` (c2d, i3d, slow), which takes the clip alone as `fast`, with
/// NULL `slow` in mg_trainer_train_step.
#[no_mangle]
pub extern "C" fn mg_schedule_collate_alpha(
    schedule: *const mg_schedule,
    out: *mut u32,
) -> mg_status {
    guard("mg_schedule_collate_alpha", || {
        let s = non_null(schedule, "schedule")?;
        *out_ptr(out, "out")? = s.inner.config().model.collate_alpha();
        Ok(())
    })
}

/// LR at a fractional epoch, warm-up included. Errors: MG_STATUS_INVALID_ARGUMENT for a
/// negative or non-finite epoch.
#[no_mangle]
pub extern "C" fn mg_schedule_lr_at(
    schedule: *const mg_schedule,
    epoch: f64,
    out: *mut f64,
) -> mg_status {
    guard("mg_schedule_lr_at", || {
        let s = non_null(schedule, "schedule")?;
        let out = out_ptr(out, "out")?;
        *out = s.inner.lr_at(epoch)?;
        Ok(())
    })
}

/// Whether PySlowFast's rule evaluates after 0-based epoch `epoch` (spec 1.13); the same rule
/// decides checkpoints with the long cycle.
#[no_mangle]
pub extern "C" fn mg_schedule_is_eval_epoch(
    schedule: *const mg_schedule,
    epoch: u32,
    out: *mut bool,
) -> mg_status {
    guard("mg_schedule_is_eval_epoch", || {
        let s = non_null(schedule, "schedule")?;
        *out_ptr(out, "out")? = s.inner.is_eval_epoch(epoch);
        Ok(())
    })
}
