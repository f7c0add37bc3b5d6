//! PySlowFast's CSV video lists (Dataset::video_list, mg_dataset_open_video_list read
//! DIR/SPLIT.csv). Each input is written as DIR/train.csv in a per-process directory under
//! /dev/shm; DIR also holds `a.mp4` (a valid 4-frame video made once per process) and `b.mp4`
//! (the same, truncated). The list is opened through the C API and the crate, every label is
//! read, and for short lists whose paths all stay inside DIR a tiny plan's first step is loaded
//! through mg_dataset_load_step, which decodes the listed videos.
#![no_main]

use std::path::{Component, Path};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use multigrid::data::Dataset;
use multigrid::ffi;
use multigrid_fuzz::{check, cstring, ok, scratch_dir, single_thread, Handles, TinyConfig};

/// Lists this short are loaded (each load decodes up to 11 videos: one clip plus replacements).
const MAX_LOADED: usize = 4;

fn dir() -> &'static Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir().join("list");
        std::fs::create_dir_all(&dir).expect("make the list directory");
        let (n, h, w) = (4u32, 16u32, 16u32);
        let frames: Vec<u8> = (0..n * h * w * 3).map(|i| (i * 7 % 251) as u8).collect();
        let a = dir.join("a.mp4");
        multigrid::data::video::encode_mp4(&a, &frames, n, h, w, 30).expect("encode a.mp4");
        let bytes = std::fs::read(&a).expect("read a.mp4");
        std::fs::write(dir.join("b.mp4"), &bytes[..bytes.len() / 2]).expect("write b.mp4");
        dir
    })
}

/// A relative path of plain names: it cannot leave DIR (no `..`, no root, no `/dev/...`).
fn inside(dir: &Path, p: &Path) -> bool {
    p.strip_prefix(dir)
        .is_ok_and(|rel| rel.components().all(|c| matches!(c, Component::Normal(_))))
}

fn load_first_step(ds: *const ffi::mg_dataset, len: u64, seed: u64) {
    let cfg = TinyConfig::first_steps();
    let Some(h) = Handles::new(&cfg.json(), len, 1, 0, seed) else {
        return;
    };
    let (mut slow_len, mut fast_len) = (0usize, 0usize);
    assert!(ok(
        "mg_collate_step_len",
        ffi::mg_collate_step_len(h.plan, 0, 0, &mut slow_len, &mut fast_len)
    ));
    let mut fast = vec![f32::NAN; fast_len];
    let mut labels = vec![-1i64; 1];
    let status = check(
        "mg_dataset_load_step",
        ffi::mg_dataset_load_step(
            ds,
            h.plan,
            0,
            0,
            std::ptr::null_mut(),
            0,
            fast.as_mut_ptr(),
            fast.len(),
            labels.as_mut_ptr(),
            labels.len(),
        ),
    );
    if status == ffi::MG_STATUS_OK {
        assert!(
            fast.iter().all(|v| !v.is_nan()),
            "loaded but not fully written"
        );
        assert!(labels[0] >= 0, "label {}", labels[0]);
    }
}

fuzz_target!(|data: &[u8]| {
    single_thread();
    let dir = dir();
    std::fs::write(dir.join("train.csv"), data).expect("write train.csv");
    let cdir = cstring(dir.to_str().expect("UTF-8 scratch path"));
    let split = cstring("train");
    let mut ds = std::ptr::null_mut();
    let status = check(
        "mg_dataset_open_video_list",
        ffi::mg_dataset_open_video_list(cdir.as_ptr(), split.as_ptr(), &mut ds),
    );
    let direct = Dataset::video_list(dir, "train");
    assert_eq!(
        status == ffi::MG_STATUS_OK,
        direct.is_ok(),
        "the C API and Dataset::video_list disagree"
    );
    let Ok(dataset) = direct else {
        return;
    };
    let mut len = 0u64;
    assert!(ok("mg_dataset_len", ffi::mg_dataset_len(ds, &mut len)));
    assert_eq!(len, dataset.len() as u64);
    assert!(len > 0, "an empty list was accepted");
    for i in 0..dataset.len() + 1 {
        assert_eq!(dataset.label(i).is_ok(), i < dataset.len(), "label {i}");
    }
    // A label past the class limit is an error (fuzz/README.md, bug 2), never an overflow.
    let _ = dataset.num_classes();
    let safe = match &dataset {
        Dataset::VideoList { entries, .. } => {
            entries.len() <= MAX_LOADED && entries.iter().all(|(p, _)| inside(dir, p))
        }
        Dataset::Store(_) | Dataset::Frames(_) | Dataset::FrameLists(_) => {
            unreachable!("a video list opened as another kind of dataset")
        }
    };
    if safe {
        load_first_step(ds, len, data.len() as u64);
    }
    ffi::mg_dataset_free(ds);
});
