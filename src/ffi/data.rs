//! C API of datasets: open a clip store or a video list, and fetch the collated batch of a plan
//! step.

use std::ffi::c_char;

use super::error::{c_str, guard, mg_status, non_null, out_ptr, FfiError};
use super::plan::mg_plan;
use crate::data::dataset::{load_batch, Batch, Dataset};
use crate::data::frame_list::FrameLists;

/// A dataset: a clip store, a video list, or Charades' or SSv2's frame lists. Create with
/// `mg_dataset_open_store`, `mg_dataset_open_video_list` or `mg_dataset_open_frame_lists`,
/// free with `mg_dataset_free`.
pub struct mg_dataset {
    pub(crate) inner: Dataset,
}

fn boxed(inner: Dataset, out: &mut *mut mg_dataset) {
    *out = Box::into_raw(Box::new(mg_dataset { inner }));
}

/// Opens a store written by `multigrid build-store` or `multigrid gen-data --store`: a clip
/// store of decoded frames (.mgstore) or a frame store of JPEG frames (.mgframes, `build-store
/// --format jpeg`), told apart by the file's magic.
/// Errors: MG_STATUS_IO (cannot read), MG_STATUS_DATA (truncated or corrupt, with the reason).
#[no_mangle]
pub extern "C" fn mg_dataset_open_store(
    path: *const c_char,
    out: *mut *mut mg_dataset,
) -> mg_status {
    guard("mg_dataset_open_store", || {
        let out = out_ptr(out, "out")?;
        let path = c_str(path, "path")?;
        boxed(Dataset::store(path)?, out);
        Ok(())
    })
}

/// Opens `dir/split.csv`, PySlowFast's `path label` list of videos (paths relative to `dir`).
/// Videos are decoded on demand; a corrupt or missing one is replaced when a batch is loaded.
#[no_mangle]
pub extern "C" fn mg_dataset_open_video_list(
    dir: *const c_char,
    split: *const c_char,
    out: *mut *mut mg_dataset,
) -> mg_status {
    guard("mg_dataset_open_video_list", || {
        let out = out_ptr(out, "out")?;
        let dir = c_str(dir, "dir")?;
        let split = c_str(split, "split")?;
        boxed(Dataset::video_list(dir, split)?, out);
        Ok(())
    })
}

/// Opens `split` of Charades (`dataset` "charades") or Something-Something V2 ("ssv2") in
/// `dir`, in PySlowFast's layout: frame lists `train.csv` (split "train") or `val.csv` (any
/// other split, as PySlowFast tests on val), and for SSv2 its label JSON files. Frame paths
/// are joined to `path_prefix` (NULL or "" for none; a relative prefix is taken from `dir`).
/// Errors: MG_STATUS_IO (a file cannot be read), MG_STATUS_DATA (a malformed list or JSON,
/// naming the line or video), MG_STATUS_INVALID_ARGUMENT (an unknown `dataset`).
#[no_mangle]
pub extern "C" fn mg_dataset_open_frame_lists(
    dataset: *const c_char,
    dir: *const c_char,
    split: *const c_char,
    path_prefix: *const c_char,
    out: *mut *mut mg_dataset,
) -> mg_status {
    guard("mg_dataset_open_frame_lists", || {
        let out = out_ptr(out, "out")?;
        let name = c_str(dataset, "dataset")?;
        let dir = std::path::Path::new(c_str(dir, "dir")?);
        let split = c_str(split, "split")?;
        let prefix = if path_prefix.is_null() {
            ""
        } else {
            c_str(path_prefix, "path_prefix")?
        };
        let lists = match name {
            "charades" => FrameLists::charades(dir, split, prefix)?,
            "ssv2" => FrameLists::ssv2(dir, split, prefix)?,
            other => {
                return Err(FfiError::Invalid(format!(
                    "dataset must be \"charades\" or \"ssv2\", got {other:?}"
                )))
            }
        };
        boxed(Dataset::FrameLists(lists), out);
        Ok(())
    })
}

/// Frees a dataset; NULL is a no-op.
#[no_mangle]
pub extern "C" fn mg_dataset_free(dataset: *mut mg_dataset) {
    super::error::free_box("mg_dataset_free", dataset);
}

/// Number of clips.
#[no_mangle]
pub extern "C" fn mg_dataset_len(dataset: *const mg_dataset, out: *mut u64) -> mg_status {
    guard("mg_dataset_len", || {
        let d = non_null(dataset, "dataset")?;
        *out_ptr(out, "out")? = d.inner.len() as u64;
        Ok(())
    })
}

/// Copies a loaded batch into the caller's buffers after checking their lengths; `labels` is
/// the class indices' buffer (int64) or the multi-hot targets' (float).
fn copy_out<L: Copy>(
    b: &Batch,
    step: u64,
    slow: *mut f32,
    slow_len: usize,
    fast: *mut f32,
    fast_len: usize,
    (labels, labels_len, want): (*mut L, usize, &[L]),
) -> Result<(), FfiError> {
    let want_slow = b.slow.as_ref().map_or(0, Vec::len);
    if fast_len != b.fast.len() || slow_len != want_slow || labels_len != want.len() {
        return Err(FfiError::Invalid(format!(
            "buffers hold {slow_len} slow, {fast_len} fast floats and {labels_len} labels; step {step} needs {want_slow}, {} and {}",
            b.fast.len(),
            want.len()
        )));
    }
    for (name, null) in [
        ("fast", fast.is_null()),
        ("labels", labels.is_null()),
        ("slow", slow.is_null() && want_slow > 0),
    ] {
        if null {
            return Err(FfiError::Null(name));
        }
    }
    // SAFETY: lengths were checked against the caller's stated buffer sizes.
    unsafe {
        std::ptr::copy_nonoverlapping(b.fast.as_ptr(), fast, b.fast.len());
        std::ptr::copy_nonoverlapping(want.as_ptr(), labels, want.len());
        if let Some(sl) = &b.slow {
            std::ptr::copy_nonoverlapping(sl.as_ptr(), slow, sl.len());
        }
    }
    Ok(())
}

/// Loads, augments (the seeded training policy) and collates the batch of plan step `step`
/// from `dataset`: fast pathway into `fast`, slow pathway into `slow` when `alpha` > 0 (NULL
/// and 0 otherwise), class labels into `labels` (`labels_len` = the step's batch size). Buffer
/// lengths count elements; mg_collate_step_len gives them. Clips that fail to decode are
/// replaced by other samples. The plan must have been made for this dataset's size. A
/// multi-label plan (`data.multi_label`) takes mg_dataset_load_step_targets instead.
#[no_mangle]
pub extern "C" fn mg_dataset_load_step(
    dataset: *const mg_dataset,
    plan: *const mg_plan,
    step: u64,
    alpha: u32,
    slow: *mut f32,
    slow_len: usize,
    fast: *mut f32,
    fast_len: usize,
    labels: *mut i64,
    labels_len: usize,
) -> mg_status {
    guard("mg_dataset_load_step", || {
        let d = &non_null(dataset, "dataset")?.inner;
        let p = &non_null(plan, "plan")?.inner;
        if p.schedule().config().data.multi_label {
            return Err(FfiError::Invalid(
                "the plan's task is multi-label (data.multi_label): use mg_dataset_load_step_targets".into(),
            ));
        }
        let b = load_batch(d, p, &p.step(step)?, alpha)?;
        copy_out(
            &b,
            step,
            slow,
            slow_len,
            fast,
            fast_len,
            (labels, labels_len, &b.labels),
        )
    })
}

/// mg_dataset_load_step for a multi-label plan (`data.multi_label`, Charades): `targets`
/// receives the multi-hot classes of each clip over the frames it spans, N x
/// `model.num_classes` floats (`targets_len` elements), row-major.
#[no_mangle]
pub extern "C" fn mg_dataset_load_step_targets(
    dataset: *const mg_dataset,
    plan: *const mg_plan,
    step: u64,
    alpha: u32,
    slow: *mut f32,
    slow_len: usize,
    fast: *mut f32,
    fast_len: usize,
    targets: *mut f32,
    targets_len: usize,
) -> mg_status {
    guard("mg_dataset_load_step_targets", || {
        let d = &non_null(dataset, "dataset")?.inner;
        let p = &non_null(plan, "plan")?.inner;
        if !p.schedule().config().data.multi_label {
            return Err(FfiError::Invalid(
                "the plan's task has one class per clip: set data.multi_label (and model.loss_func bce_logit), or use mg_dataset_load_step".into(),
            ));
        }
        let b = load_batch(d, p, &p.step(step)?, alpha)?;
        let want = b.targets.as_deref().unwrap_or(&[]);
        copy_out(
            &b,
            step,
            slow,
            slow_len,
            fast,
            fast_len,
            (targets, targets_len, want),
        )
    })
}
