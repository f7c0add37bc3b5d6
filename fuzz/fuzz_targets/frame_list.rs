//! PySlowFast's frame lists, as Charades and SSv2 ship (FrameLists, mg_dataset_open_frame_lists
//! read DIR/train.csv). Each input is written as DIR/train.csv in a per-process directory under
//! /dev/shm; DIR also holds `a.jpg` (a valid 8x8 JPEG made once per process) and `b.jpg` (the
//! same, truncated). The list is opened as Charades through the C API and the crate, which must
//! agree; every video's label sets are read over any span; then it is opened as SSv2 with label
//! JSONs written for the videos it names (so it opens exactly when Charades did). For short
//! lists whose frames all stay inside DIR, a tiny plan's first step is loaded through
//! mg_dataset_load_step_targets (Charades) and mg_dataset_load_step (SSv2), decoding the frames.
#![no_main]

use std::path::{Component, Path};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use multigrid::data::frame_list::FrameLists;
use multigrid::data::Dataset;
use multigrid::ffi;
use multigrid_fuzz::{check, cstring, ok, scratch_dir, single_thread, Handles, TinyConfig};

/// Lists this short are loaded; longer videos are not (each load decodes up to 11 clips).
const MAX_LOADED: usize = 4;
const MAX_FRAMES: usize = 64;
const CLASSES: u32 = 16;

fn dir() -> &'static Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir().join("frames");
        std::fs::create_dir_all(&dir).expect("make the frame-list directory");
        let (h, w) = (8u32, 8u32);
        let pixels: Vec<u8> = (0..h * w * 3).map(|i| (i * 7 % 251) as u8).collect();
        let a = dir.join("a.jpg");
        image::save_buffer(&a, &pixels, w, h, image::ExtendedColorType::Rgb8).expect("a.jpg");
        let bytes = std::fs::read(&a).expect("read a.jpg");
        std::fs::write(dir.join("b.jpg"), &bytes[..bytes.len() / 2]).expect("write b.jpg");
        dir
    })
}

/// A relative path of plain names: it cannot leave DIR (no `..`, no root, no `/dev/...`).
fn inside(dir: &Path, p: &Path) -> bool {
    p.strip_prefix(dir)
        .is_ok_and(|rel| rel.components().all(|c| matches!(c, Component::Normal(_))))
}

fn config(multi_label: bool) -> String {
    let cfg = TinyConfig::first_steps();
    let mut v: serde_json::Value = serde_json::from_str(&cfg.json()).expect("tiny config");
    v["train"]["dataset"] = (if multi_label { "charades" } else { "ssv2" }).into();
    v["data"]["multi_label"] = multi_label.into();
    v["model"]["num_classes"] = CLASSES.into();
    v["model"]["loss_func"] = (if multi_label {
        "bce_logit"
    } else {
        "cross_entropy"
    })
    .into();
    v.to_string()
}

fn load_first_step(ds: *const ffi::mg_dataset, len: u64, seed: u64, multi_label: bool) {
    let Some(h) = Handles::new(&config(multi_label), len, 1, 0, seed) else {
        return;
    };
    let (mut slow_len, mut fast_len) = (0usize, 0usize);
    assert!(ok(
        "mg_collate_step_len",
        ffi::mg_collate_step_len(h.plan, 0, 0, &mut slow_len, &mut fast_len)
    ));
    let mut fast = vec![f32::NAN; fast_len];
    let null = std::ptr::null_mut();
    let status = if multi_label {
        let mut targets = vec![f32::NAN; CLASSES as usize];
        let status = check(
            "mg_dataset_load_step_targets",
            ffi::mg_dataset_load_step_targets(
                ds,
                h.plan,
                0,
                0,
                null,
                0,
                fast.as_mut_ptr(),
                fast.len(),
                targets.as_mut_ptr(),
                targets.len(),
            ),
        );
        if status == ffi::MG_STATUS_OK {
            assert!(targets.iter().all(|&t| t == 0.0 || t == 1.0), "{targets:?}");
        }
        status
    } else {
        let mut labels = vec![-1i64; 1];
        let status = check(
            "mg_dataset_load_step",
            ffi::mg_dataset_load_step(
                ds,
                h.plan,
                0,
                0,
                null,
                0,
                fast.as_mut_ptr(),
                fast.len(),
                labels.as_mut_ptr(),
                labels.len(),
            ),
        );
        if status == ffi::MG_STATUS_OK {
            assert_eq!(labels[0], 0, "the one SSv2 class");
        }
        status
    };
    if status == ffi::MG_STATUS_OK {
        assert!(
            fast.iter().all(|v| !v.is_nan()),
            "loaded but not fully written"
        );
    }
}

fn open(kind: &str, dir: &Path) -> (ffi::mg_status, *mut ffi::mg_dataset) {
    let (ckind, cdir, split) = (
        cstring(kind),
        cstring(dir.to_str().expect("UTF-8 scratch path")),
        cstring("train"),
    );
    let mut ds = std::ptr::null_mut();
    let status = check(
        "mg_dataset_open_frame_lists",
        ffi::mg_dataset_open_frame_lists(
            ckind.as_ptr(),
            cdir.as_ptr(),
            split.as_ptr(),
            std::ptr::null(),
            &mut ds,
        ),
    );
    (status, ds)
}

fuzz_target!(|data: &[u8]| {
    single_thread();
    let dir = dir();
    std::fs::write(dir.join("train.csv"), data).expect("write train.csv");
    let (status, ds) = open("charades", dir);
    let direct = FrameLists::charades(dir, "train", "");
    assert_eq!(
        status == ffi::MG_STATUS_OK,
        direct.is_ok(),
        "the C API and FrameLists::charades disagree"
    );
    let Ok(lists) = direct else {
        return;
    };
    let mut len = 0u64;
    assert!(ok("mg_dataset_len", ffi::mg_dataset_len(ds, &mut len)));
    assert_eq!(len, lists.len() as u64);
    assert!(len > 0, "an empty list was accepted");
    for i in 0..lists.len() + 1 {
        for span in [[0, 0], [0, u32::MAX], [u32::MAX, 0], [u32::MAX, u32::MAX]] {
            assert_eq!(
                lists.labels_in(i, span).is_ok(),
                i < lists.len(),
                "video {i}"
            );
        }
        assert!(lists.label(i).is_err(), "Charades videos have label sets");
    }
    let names: Vec<String> = (0..lists.len())
        .map(|i| lists.video_frames(i).expect("video").0.to_string())
        .collect();
    let safe = lists.len() <= MAX_LOADED
        && (0..lists.len()).all(|i| {
            let frames = lists.video_frames(i).expect("video").1;
            frames.len() <= MAX_FRAMES && frames.iter().all(|p| inside(dir, p))
        });
    // A label past the class limit is an error, never an overflow.
    let _ = Dataset::FrameLists(lists).num_classes();
    if safe {
        load_first_step(ds, len, data.len() as u64, true);
    }
    ffi::mg_dataset_free(ds);

    // The same frames as SSv2, one class for every video.
    let videos: Vec<serde_json::Value> = names
        .iter()
        .map(|n| serde_json::json!({"id": n, "template": "Moving [something]"}))
        .collect();
    let write = |name: &str, v: serde_json::Value| {
        std::fs::write(dir.join(name), v.to_string()).expect("write the SSv2 JSON");
    };
    write(
        "something-something-v2-labels.json",
        serde_json::json!({"Moving something": "0"}),
    );
    write(
        "something-something-v2-train.json",
        serde_json::Value::Array(videos),
    );
    let (status, ds) = open("ssv2", dir);
    assert_eq!(status, ffi::MG_STATUS_OK, "SSv2 refused what Charades read");
    let mut len2 = 0u64;
    assert!(ok("mg_dataset_len", ffi::mg_dataset_len(ds, &mut len2)));
    assert_eq!(len2, len);
    if safe {
        load_first_step(ds, len, data.len() as u64, false);
    }
    ffi::mg_dataset_free(ds);
});
