//! Clip-store bytes (src/data/store.rs, the `.mgstore` format): truncated, flipped, with wrong
//! lengths and offsets. Each input is written to a file in a per-process directory under
//! /dev/shm, opened through mg_dataset_open_store and through the crate's ClipStore, every clip
//! is read (bounded), the labels are summarised, and when the store opens, a tiny plan's first
//! step is loaded from it through mg_dataset_load_step.
//!
//! Input: one byte, then the file. The byte's low two bits say which checksums the harness
//! recomputes after the mutation (0: none, the raw bytes; 1: the header's; 2: also the
//! index's; 3: also every clip's), so the checks behind the CRCs are reached too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multigrid::data::{ClipStore, Dataset};
use multigrid::ffi;
use multigrid_fuzz::{check, cstring, load_first_steps, ok, scratch_dir, single_thread, store};

/// Clips read one by one from the front of the index (and the last two).
const MAX_CLIPS_READ: usize = 64;

fuzz_target!(|data: &[u8]| {
    single_thread();
    let Some((&mode, file)) = data.split_first() else {
        return;
    };
    let mut bytes = file.to_vec();
    store::fix_checksums(&mut bytes, mode & 3);
    let path = scratch_dir().join("input.mgstore");
    std::fs::write(&path, &bytes).expect("write the input file");
    let cpath = cstring(path.to_str().expect("UTF-8 scratch path"));

    let mut ds = std::ptr::null_mut();
    let status = check(
        "mg_dataset_open_store",
        ffi::mg_dataset_open_store(cpath.as_ptr(), &mut ds),
    );
    let direct = ClipStore::open(&path);
    assert_eq!(
        status == ffi::MG_STATUS_OK,
        direct.is_ok(),
        "the C API and ClipStore::open disagree"
    );
    let Ok(s) = direct else {
        assert_eq!(
            status,
            ffi::MG_STATUS_DATA,
            "{}",
            multigrid_fuzz::last_error()
        );
        return;
    };
    let mut len = 0u64;
    assert!(ok("mg_dataset_len", ffi::mg_dataset_len(ds, &mut len)));
    assert_eq!(len, s.len() as u64);
    let n = s.len();
    for i in (0..n.min(MAX_CLIPS_READ)).chain(n.saturating_sub(2).max(MAX_CLIPS_READ)..n + 1) {
        let info = s.info(i);
        let frames = s.frames(i);
        if i >= n {
            assert!(info.is_err() && frames.is_err(), "clip {i} of {n} was read");
            continue;
        }
        let info = info.expect("info of an indexed clip");
        assert_eq!(
            info.len,
            u64::from(info.num_frames) * u64::from(info.height) * u64::from(info.width) * 3,
            "clip {i}: {info:?}"
        );
        if let Ok(f) = frames {
            assert_eq!(f.len() as u64, info.len, "clip {i}: {info:?}");
        }
    }
    let dataset = Dataset::Store(s);
    // A label past the class limit is an error (fuzz/README.md, bug 2), never an overflow.
    let _ = dataset.num_classes();
    drop(dataset);
    if len > 0 {
        load_first_steps(ds, len, mode);
    }
    ffi::mg_dataset_free(ds);
});
