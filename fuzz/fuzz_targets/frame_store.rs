//! Frame-store bytes (src/data/frame_store.rs, the `.mgframes` format): truncated, flipped, with
//! wrong lengths, offsets and JPEG data. Each input is written to a file in a per-process
//! directory under /dev/shm, opened through mg_dataset_open_store (which tells the two store
//! formats apart by their magic) and through the crate's FrameStore, every frame of the first
//! clips is decoded (bounded), and when the store opens, a tiny plan's first and last steps are
//! loaded from it through mg_dataset_load_step.
//!
//! Input: one byte, then the file. The byte's low two bits say which checksums the harness
//! recomputes after the mutation (0: none; 1: the header's; 2: also the index's; 3: also every
//! frame's), so the checks behind the CRCs, and the JPEG decoder, are reached too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multigrid::data::{Dataset, FrameStore};
use multigrid::ffi;
use multigrid_fuzz::{check, cstring, frame_store, load_first_steps, ok, scratch_dir, single_thread};

/// Clips whose frames are decoded one by one (from the front of the index).
const MAX_CLIPS_READ: usize = 16;
/// Decoded pixels per input, so a header claiming a huge frame stays cheap.
const MAX_PIXELS: u64 = 1 << 16;

fuzz_target!(|data: &[u8]| {
    single_thread();
    let Some((&mode, file)) = data.split_first() else {
        return;
    };
    let mut bytes = file.to_vec();
    frame_store::fix_checksums(&mut bytes, mode & 3);
    let path = scratch_dir().join("input.mgframes");
    std::fs::write(&path, &bytes).expect("write the input file");
    let cpath = cstring(path.to_str().expect("UTF-8 scratch path"));

    let mut ds = std::ptr::null_mut();
    let status = check(
        "mg_dataset_open_store",
        ffi::mg_dataset_open_store(cpath.as_ptr(), &mut ds),
    );
    let direct = FrameStore::open(&path);
    // Bytes without the frame store's magic open as a clip store, or not at all.
    if bytes.get(..8) == Some(b"MGFRAME1".as_slice()) {
        assert_eq!(
            status == ffi::MG_STATUS_OK,
            direct.is_ok(),
            "the C API and FrameStore::open disagree"
        );
    } else {
        assert!(direct.is_err(), "a frame store opened without its magic");
    }
    let Ok(s) = direct else {
        if status != ffi::MG_STATUS_OK {
            assert_eq!(
                status,
                ffi::MG_STATUS_DATA,
                "{}",
                multigrid_fuzz::last_error()
            );
        }
        ffi::mg_dataset_free(ds);
        return;
    };
    let mut len = 0u64;
    assert!(ok("mg_dataset_len", ffi::mg_dataset_len(ds, &mut len)));
    assert_eq!(len, s.len() as u64);
    let n = s.len();
    let mut budget = MAX_PIXELS;
    let mut small = true;
    for i in 0..n {
        let info = s.info(i).expect("info of an indexed clip");
        let pixels = u64::from(info.height) * u64::from(info.width);
        small &= pixels <= MAX_PIXELS;
        if i >= MAX_CLIPS_READ {
            continue;
        }
        for f in 0..info.num_frames.min(4) {
            if pixels > budget {
                break;
            }
            budget -= pixels;
            let mut out = vec![0u8; pixels as usize * 3];
            let _ = s.decode_frame(i, f, &mut out);
        }
        assert!(s.frame_bytes(i, info.num_frames).is_err());
        if pixels * 3 <= budget {
            budget -= pixels * 3;
            // Unsorted and past-the-end picks: clamped, decoded once each.
            let mut out = Vec::new();
            let _ = s.gather(i, &[info.num_frames + 5, 0, 0], &mut out);
        }
    }
    assert!(s.info(n).is_err());
    let dataset = Dataset::Frames(s);
    let _ = dataset.num_classes();
    drop(dataset);
    // Clips of huge frames make every load slow, not wrong: the reads above cover them.
    if len > 0 && small {
        load_first_steps(ds, len, mode);
    }
    ffi::mg_dataset_free(ds);
});
