//! The data pipeline: synthetic videos through FFmpeg, the clip store, corrupt inputs, and the
//! background loader.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::repo;
use multigrid::data::dataset::load_batch;
use multigrid::data::{Dataset, Loader, LoaderOptions};
use multigrid::{Plan, Schedule};

fn tiny_schedule() -> Schedule {
    let text =
        std::fs::read_to_string(repo().join("configs/synthetic_slowfast_tiny_multigrid.json"))
            .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Small batches so the tests stay quick on two cores.
    v["train"]["batch_size"] = 2.into();
    Schedule::from_json(&v.to_string()).unwrap()
}

/// Generates a small dataset once per test binary (videos and stores).
fn dataset_dir() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("synthetic_small");
        let _ = std::fs::remove_dir_all(&dir);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_multigrid"));
        cmd.args([
            "gen-data", "--clips", "40", "--frames", "24", "--size", "48", "--seed", "3",
            "--store", "--out",
        ])
        .arg(&dir);
        if !cfg!(feature = "video") {
            cmd.arg("--no-videos");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .clone()
}

#[cfg(feature = "video")]
#[test]
fn videos_decode_to_the_frames_that_were_encoded() {
    use multigrid::data::{synthetic, video};
    let dir = dataset_dir();
    let path = dir.join("videos/000005.mp4");
    let info = video::probe(&path).unwrap();
    assert_eq!((info.num_frames, info.height, info.width), (24, 48, 48));
    assert!((info.fps - 30.0).abs() < 1e-6, "fps {}", info.fps);
    let original = synthetic::render_clip(3, 5, 24, 48);
    let f = 48 * 48 * 3;
    // A range in the middle: seek, decode forward, return exactly those frames.
    let d = video::decode_range(&path, 10, 13).unwrap();
    assert_eq!((d.first_frame, d.num_frames), (10, 4));
    for k in 0..4 {
        let a = &d.frames[k * f..(k + 1) * f];
        let b = &original[(10 + k) * f..(11 + k) * f];
        // H.264 at crf 18 on noisy frames: close, not exact.
        let mean_err: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
            .sum::<f64>()
            / f as f64;
        assert!(
            mean_err < 12.0,
            "frame {}: mean abs error {mean_err}",
            10 + k
        );
        // And it is that frame, not its neighbour.
        let other = &original[(12 + k) % 24 * f..((12 + k) % 24 + 1) * f];
        let other_err: f64 = a
            .iter()
            .zip(other)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
            .sum::<f64>()
            / f as f64;
        assert!(
            mean_err < other_err,
            "frame {} matches a neighbour better",
            10 + k
        );
    }
}

#[cfg(feature = "video")]
#[test]
fn corrupt_and_missing_videos_are_reported_and_replaced() {
    let src = dataset_dir();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("corrupt_list");
    std::fs::create_dir_all(&dir).unwrap();
    let good: Vec<String> = std::fs::read_to_string(src.join("train.csv"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    // Clip 0 is garbage bytes, clip 1 is a missing file, the rest are real.
    std::fs::write(dir.join("broken.mp4"), b"this is not an mp4 file at all").unwrap();
    let mut list = String::from("broken.mp4 0\nmissing.mp4 1\n");
    for line in &good {
        list.push_str(&format!("{}/{line}\n", src.display()));
    }
    std::fs::write(dir.join("train.csv"), list).unwrap();
    let dataset = Dataset::video_list(&dir, "train").unwrap();
    let schedule = tiny_schedule();
    let plan = Plan::new(&schedule, dataset.len() as u64, 1, 0, 1).unwrap();
    // Walk steps until one contains a broken clip; it must be replaced, not fail.
    let mut seen = Vec::new();
    let mut indices = Vec::new();
    for k in 0..plan.total_steps() {
        plan.step_indices(k, &mut indices).unwrap();
        if indices.contains(&0) || indices.contains(&1) {
            let step = plan.step(k).unwrap();
            let b = load_batch(&dataset, &plan, &step, 4).unwrap();
            assert!(!b.indices.contains(&0) && !b.indices.contains(&1));
            assert_eq!(b.labels.len(), step.batch_size as usize);
            seen.extend(b.failures);
            if seen.len() >= 2 {
                break;
            }
        }
    }
    assert!(seen.iter().any(|f| f.contains("broken.mp4")), "{seen:?}");
    assert!(seen.iter().any(|f| f.contains("missing.mp4")), "{seen:?}");
}

#[test]
fn store_and_videos_give_the_same_batch_shapes_and_labels() {
    let dir = dataset_dir();
    let store = Dataset::store(dir.join("train.mgstore")).unwrap();
    assert_eq!(store.len(), 34); // 40 clips: 3 go to val, 3 to test
    assert_eq!(store.num_classes().unwrap(), 12);
    let schedule = tiny_schedule();
    let plan = Plan::new(&schedule, store.len() as u64, 1, 0, 9).unwrap();
    let step = plan.step(0).unwrap();
    let b = load_batch(&store, &plan, &step, 4).unwrap();
    let (n, t, s) = (
        step.batch_size as usize,
        step.num_frames as usize,
        step.crop_size as usize,
    );
    assert_eq!(b.fast.len(), n * 3 * t * s * s);
    assert_eq!(
        b.slow.as_ref().unwrap().len(),
        n * 3 * (t / 4).max(1) * s * s
    );
    assert!(b.fast.iter().all(|v| v.is_finite()));
    assert!(b.failures.is_empty());
    if cfg!(feature = "video") {
        let videos = Dataset::video_list(&dir, "train").unwrap();
        let v = load_batch(&videos, &plan, &step, 4).unwrap();
        assert_eq!(v.labels, b.labels);
        assert_eq!(v.fast.len(), b.fast.len());
        // Same clips, same augmentation draws; only the H.264 loss differs.
        let mean: f64 = v
            .fast
            .iter()
            .zip(&b.fast)
            .map(|(a, c)| f64::from((a - c).abs()))
            .sum::<f64>()
            / b.fast.len() as f64;
        assert!(
            mean < 0.2,
            "mean difference {mean} between decoded and stored clips"
        );
    }
}

#[test]
fn loader_delivers_every_step_in_order_with_bounded_memory() {
    let dir = dataset_dir();
    let store = Arc::new(Dataset::store(dir.join("train.mgstore")).unwrap());
    let schedule = tiny_schedule();
    let plan = Arc::new(Plan::new(&schedule, store.len() as u64, 1, 0, 5).unwrap());
    let end = plan.total_steps().min(25);
    let options = LoaderOptions {
        workers: 3,
        queue_clips: 40,
        alpha: 4,
    };
    let mut loader = Loader::new(plan.clone(), store.clone(), 0..end, options).unwrap();
    let mut k = 0;
    while let Some(b) = loader.next_batch() {
        let b = b.unwrap();
        assert_eq!(b.step, k);
        let direct = load_batch(&store, &plan, &plan.step(k).unwrap(), 4).unwrap();
        assert_eq!(
            b.fast, direct.fast,
            "step {k}: background and direct loading differ"
        );
        k += 1;
    }
    assert_eq!(k, end);
    let stats = loader.stats();
    assert_eq!(stats.batches, end);
    assert_eq!(stats.failures, 0);
    // Dropping a loader mid-run stops its workers.
    let mut loader = Loader::new(plan.clone(), store, 0..end, options).unwrap();
    assert!(loader.next_batch().unwrap().is_ok());
    drop(loader);
}

#[test]
fn corrupted_store_is_reported_not_read() {
    let dir = dataset_dir();
    let copy = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("corrupt.mgstore");
    let mut bytes = std::fs::read(dir.join("train.mgstore")).unwrap();
    bytes[200] ^= 0x40; // inside clip 0's frames
    std::fs::write(&copy, &bytes).unwrap();
    let store = Dataset::store(&copy).unwrap();
    let mut config = tiny_schedule().config().clone();
    config.multigrid.long_cycle = false;
    config.multigrid.short_cycle = false;
    let schedule = Schedule::new(config).unwrap();
    let plan = Plan::new(&schedule, store.len() as u64, 1, 0, 0).unwrap();
    // Clip 0 is corrupt: the batch holding it replaces it and says why.
    let mut indices = Vec::new();
    for k in 0..plan.total_steps() {
        plan.step_indices(k, &mut indices).unwrap();
        if indices.contains(&0) {
            let b = load_batch(&store, &plan, &plan.step(k).unwrap(), 0).unwrap();
            assert!(
                b.failures.iter().any(|f| f.contains("clip 0 checksum")),
                "{:?}",
                b.failures
            );
            assert!(!b.indices.contains(&0));
            return;
        }
    }
    panic!("no step used clip 0");
}

#[test]
fn video_list_errors_name_the_line() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bad_lists");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("train.csv"), "a.mp4 0\nb.mp4 notanumber\n").unwrap();
    let e = Dataset::video_list(&dir, "train").unwrap_err().to_string();
    assert!(e.contains("train.csv:2") && e.contains("notanumber"), "{e}");
    let e = Dataset::video_list(&dir, "val").unwrap_err().to_string();
    assert!(e.contains("val.csv"), "{e}");
    let _ = Path::new("");
}

#[test]
fn dataset_c_api() {
    use multigrid::ffi::*;
    use std::ffi::CString;
    use std::ptr;
    let dir = dataset_dir();
    let path = CString::new(dir.join("train.mgstore").to_str().unwrap()).unwrap();
    let mut d = ptr::null_mut();
    assert_eq!(mg_dataset_open_store(path.as_ptr(), &mut d), MG_STATUS_OK);
    let mut n = 0u64;
    assert_eq!(mg_dataset_len(d, &mut n), MG_STATUS_OK);
    assert_eq!(n, 34);
    let json = CString::new(tiny_schedule().config().clone().to_json_string()).unwrap();
    let mut s = ptr::null_mut();
    assert_eq!(mg_schedule_new(json.as_ptr(), &mut s), MG_STATUS_OK);
    let mut p = ptr::null_mut();
    assert_eq!(mg_plan_new(s, n, 1, 0, 0, &mut p), MG_STATUS_OK);
    let (mut sl, mut fl) = (0usize, 0usize);
    assert_eq!(mg_collate_step_len(p, 0, 4, &mut sl, &mut fl), MG_STATUS_OK);
    let mut step = mg_step::default();
    assert_eq!(mg_plan_step(p, 0, &mut step), MG_STATUS_OK);
    let (mut slow, mut fast, mut labels) = (
        vec![0f32; sl],
        vec![0f32; fl],
        vec![-1i64; step.batch_size as usize],
    );
    let st = mg_dataset_load_step(
        d,
        p,
        0,
        4,
        slow.as_mut_ptr(),
        sl,
        fast.as_mut_ptr(),
        fl,
        labels.as_mut_ptr(),
        labels.len(),
    );
    assert_eq!(st, MG_STATUS_OK);
    assert!(labels.iter().all(|&l| (0..12).contains(&l)));
    assert!(fast.iter().any(|&v| v != 0.0));
    let st = mg_dataset_load_step(
        d,
        p,
        0,
        4,
        slow.as_mut_ptr(),
        sl,
        fast.as_mut_ptr(),
        fl - 1,
        labels.as_mut_ptr(),
        labels.len(),
    );
    assert_eq!(st, MG_STATUS_INVALID_ARGUMENT);
    // A plan for another dataset size is refused.
    let mut other = ptr::null_mut();
    assert_eq!(mg_plan_new(s, n + 1, 1, 0, 0, &mut other), MG_STATUS_OK);
    let st = mg_dataset_load_step(
        d,
        other,
        0,
        4,
        slow.as_mut_ptr(),
        sl,
        fast.as_mut_ptr(),
        fl,
        labels.as_mut_ptr(),
        labels.len(),
    );
    assert_eq!(st, MG_STATUS_INVALID_ARGUMENT);
    // A truncated store fails to open with MG_STATUS_DATA.
    let bytes = std::fs::read(dir.join("val.mgstore")).unwrap();
    let cut = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cut.mgstore");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let cut = CString::new(cut.to_str().unwrap()).unwrap();
    let mut bad = ptr::null_mut();
    assert_eq!(
        mg_dataset_open_store(cut.as_ptr(), &mut bad),
        MG_STATUS_DATA
    );
    assert!(bad.is_null());
    mg_plan_free(other);
    mg_plan_free(p);
    mg_schedule_free(s);
    mg_dataset_free(d);
    mg_dataset_free(ptr::null_mut());
}

/// `data.target_fps` (PySlowFast's DATA.TARGET_FPS): start and stride count frames at the
/// target rate, so a 60 fps clip spans twice as many of its own frames as a 30 fps one, and a
/// clip of unknown rate is taken at the target rate.
#[test]
fn target_fps_counts_frames_at_the_target_rate() {
    use multigrid::collate::{ClipParams, Normalize};
    use multigrid::data::StoreWriter;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("target_fps");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("clips.mgstore");
    // Frame k is a flat grey of value k, so the collated value names the frame taken.
    let (n, side) = (64u32, 8u32);
    let frames: Vec<u8> = (0..n)
        .flat_map(|k| std::iter::repeat_n(k as u8, (side * side * 3) as usize))
        .collect();
    let mut w = StoreWriter::create(&path).unwrap();
    w.add_at_fps(&frames, n, side, side, 0, Some(60.0)).unwrap();
    w.add_at_fps(&frames, n, side, side, 0, Some(30.0)).unwrap();
    w.add(&frames, n, side, side, 0).unwrap();
    w.finish().unwrap();
    let store = Dataset::store(&path).unwrap();
    let norm = Normalize {
        mean: [0.0; 3],
        std: [1.0 / 255.0; 3],
        reverse_channels: false,
    };
    let taken = |clip: usize| {
        let (t, s) = (4u32, side);
        let mut out = vec![0f32; (3 * t * s * s) as usize];
        let mut seen = 0;
        let choose = |f, _h, _w| {
            seen = f;
            ClipParams {
                start_frame: 2,
                stride: 4,
                short_side: side,
                ..ClipParams::default()
            }
            .into()
        };
        store
            .collate_clip(clip, t, s, &norm, 30, choose, &mut out)
            .unwrap();
        let per_frame = (s * s) as usize;
        let idx: Vec<u32> = (0..t as usize)
            .map(|k| out[k * per_frame].round() as u32)
            .collect();
        (seen, idx)
    };
    // 60 fps: 32 target frames; from source frame 4, 4 x 4 x 2 = 32 source frames
    // (torch.linspace(4, 35, 4).long() = [4, 14, 24, 35]).
    assert_eq!(taken(0), (32, vec![4, 14, 24, 35]));
    // 30 fps and unknown: the frames as they are, 2..2 + 16.
    assert_eq!(taken(1), (64, vec![2, 7, 12, 17]));
    assert_eq!(taken(2), taken(1));
}

/// Mean absolute difference of two batches' values, in pixel levels (0-255): the collated
/// values are normalised by the config's std (0.225 here).
fn mean_levels(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let sum: f64 = a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).sum();
    sum / a.len() as f64 * 0.225 * 255.0
}

/// `build-store --format jpeg` from `data` into `out`.
fn build_frame_store(data: &Path, out: &Path) {
    let result = Command::new(env!("CARGO_BIN_EXE_multigrid"))
        .args([
            "build-store",
            "--format",
            "jpeg",
            "--quality",
            "90",
            "--data",
        ])
        .arg(data)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

/// The frame store gives the clips of the source it was built from, with the same draws, within
/// JPEG's error at quality 90: from the clip store (no video list beside it), and from the MP4
/// videos. Every step of a multigrid plan, so every shape is compared. JPEG at 90 stays closer
/// to the rendered frames than H.264 does.
#[test]
fn frame_store_gives_its_sources_clips_within_jpeg_error() {
    let dir = dataset_dir();
    let only_store = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("frames_from_store");
    let _ = std::fs::remove_dir_all(&only_store);
    std::fs::create_dir_all(&only_store).unwrap();
    std::fs::copy(dir.join("train.mgstore"), only_store.join("train.mgstore")).unwrap();
    build_frame_store(&only_store, &only_store.join("train.mgframes"));
    let raw = Dataset::store(only_store.join("train.mgstore")).unwrap();
    let frames = Dataset::store(only_store.join("train.mgframes")).unwrap();
    assert!(matches!(frames, Dataset::Frames(_)), "{frames:?}");
    let bytes = |p: &Path| std::fs::metadata(p).unwrap().len();
    let ratio = bytes(&only_store.join("train.mgstore")) as f64
        / bytes(&only_store.join("train.mgframes")) as f64;
    // Small frames with per-frame noise: 3x here, 6.4x at 256 px (README).
    assert!(ratio > 2.0, "the frame store is only {ratio:.1}x smaller");
    let schedule = tiny_schedule();
    let plan = Plan::new(&schedule, raw.len() as u64, 1, 0, 4).unwrap();
    let videos = cfg!(feature = "video").then(|| Dataset::video_list(&dir, "train").unwrap());
    let (mut jpeg, mut h264): (f64, f64) = (0.0, 0.0);
    let mut shapes = std::collections::BTreeSet::new();
    for k in 0..plan.total_steps().min(40) {
        let step = plan.step(k).unwrap();
        let want = load_batch(&raw, &plan, &step, 4).unwrap();
        let got = load_batch(&frames, &plan, &step, 4).unwrap();
        assert_eq!((&got.indices, &got.labels), (&want.indices, &want.labels));
        assert_eq!(
            got.slow.as_ref().map(Vec::len),
            want.slow.as_ref().map(Vec::len)
        );
        jpeg = jpeg.max(mean_levels(&got.fast, &want.fast));
        if let Some(v) = &videos {
            let v = load_batch(v, &plan, &step, 4).unwrap();
            h264 = h264.max(mean_levels(&v.fast, &want.fast));
        }
        shapes.insert((step.batch_size, step.num_frames, step.crop_size));
    }
    eprintln!("mean error in levels: JPEG 90 {jpeg:.2}, H.264 {h264:.2}, over {shapes:?}");
    assert!(shapes.len() >= 3, "only the shapes {shapes:?}");
    assert!(
        jpeg > 0.0 && jpeg < 6.0,
        "JPEG at 90 is {jpeg:.2} levels from the clip store"
    );
    if let Some(videos) = &videos {
        assert!(jpeg < h264, "JPEG at 90 {jpeg:.2} levels, H.264 {h264:.2}");
        // Built from the videos, it decodes what FFmpeg decodes, within JPEG's error.
        let from_videos = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("frames_from_mp4");
        let _ = std::fs::remove_dir_all(&from_videos);
        std::fs::create_dir_all(&from_videos).unwrap();
        build_frame_store(&dir, &from_videos.join("train.mgframes"));
        let frames = Dataset::store(from_videos.join("train.mgframes")).unwrap();
        let step = plan.step(0).unwrap();
        let want = load_batch(videos, &plan, &step, 4).unwrap();
        let got = load_batch(&frames, &plan, &step, 4).unwrap();
        assert_eq!(got.labels, want.labels);
        let d = mean_levels(&got.fast, &want.fast);
        eprintln!("frame store from MP4 vs MP4: {d:.2} levels");
        assert!(d < 6.0, "JPEG at 90 is {d:.2} levels from the decoded MP4");
    }
}
