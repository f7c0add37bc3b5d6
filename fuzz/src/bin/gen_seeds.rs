//! Writes the seed corpora under fuzz/corpus/<target>/: the repository's configs with plan
//! parameters, structured collation inputs, tiny clip stores made with the library's own
//! StoreWriter, CSV lists, and tiny videos made with the library's own encoder. Run by
//! `scripts/fuzz.sh seeds` (a plain build, no fuzzing flags); the output is committed.

use std::path::{Path, PathBuf};

use multigrid::data::{video, FrameStoreWriter, StoreWriter};
use multigrid_fuzz::{TinyConfig, Writer};

fn put(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("make the corpus directory");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

/// Plan parameters in the schedule_plan layout: dataset magnitude and bits, world size, rank,
/// seed, an LR epoch (f64), an eval epoch, two steps, then alphas.
fn plan_params(dataset: u64, world: u8, rank: u8, seed: u64) -> Vec<u8> {
    let bits = 64 - dataset.leading_zeros();
    let mut w = Writer::default();
    w.u8(bits as u8)
        .u64(dataset)
        .u8(world)
        .u8(rank)
        .u64(seed)
        .f64(2.5)
        .u32(3)
        .u64(7)
        .u64(123_456);
    for alpha in [0u8, 4, 2, 8, 1, 4, 4, 4, 4] {
        w.u8(alpha);
    }
    w.0
}

fn schedule_plan(root: &Path, out: &Path) {
    let mut configs: Vec<PathBuf> = std::fs::read_dir(root.join("configs"))
        .expect("configs/")
        .map(|e| e.expect("configs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    configs.sort();
    let params = [
        plan_params(1000, 1, 0, 0),
        plan_params(240_000, 8, 3, 42),
        plan_params(17, 2, 1, 7),
    ];
    for (i, p) in configs.iter().enumerate() {
        let json = std::fs::read(p).expect("read a config");
        let stem = p.file_stem().unwrap_or_default().to_string_lossy();
        let mut seed = json.clone();
        seed.push(0);
        // The multigrid configs' batches need a Kinetics-sized dataset on 8 ranks.
        let p = if stem.contains("multigrid") {
            &params[1]
        } else {
            &params[i % params.len()]
        };
        seed.extend_from_slice(p);
        put(out, &format!("{stem}.bin"), &seed);
    }
    put(out, "empty_object.json", b"{}");
    let tiny = TinyConfig::read(&mut multigrid_fuzz::Reader::new(&[
        3, 7, 2, 3, 1, 3, 2, 0xFF, 1, 1,
    ]));
    let mut seed = tiny.json().into_bytes();
    seed.push(0);
    seed.extend_from_slice(&plan_params(50, 1, 0, 1));
    put(out, "tiny_all_cycles.bin", &seed);
}

fn collate(out: &Path) {
    // Explicit: mode 0, 2 clips, T=4, S=8, default mean/std, no NULLs.
    let mut w = Writer::default();
    w.u8(0).u8(2).u8(4).u8(8);
    w.bytes(&[0; 6]).u8(0);
    for (nf, h, wd, start, stride, short, cx, cy, flip) in [
        (6u8, 10u8, 12u8, 1u8, 2u8, 10u8, 3u8, 1u8, 0u8),
        (3, 16, 9, 0, 1, 9, 0, 4, 1),
    ] {
        w.u8(nf).u8(h).u8(wd).u8(0x5A);
        w.u8(start).u8(stride).u8(short).u8(cx).u8(cy).u8(flip);
    }
    w.u8(0);
    put(out, "explicit_two_clips.bin", &w.0);
    // Explicit with an overflowing stride (the u32 edge) and a NULL frames clip.
    let mut w = Writer::default();
    w.u8(0).u8(1).u8(3).u8(4);
    w.bytes(&[0; 6]).u8(0);
    w.u8(255).u32(1 << 20).u8(20).u8(20).u8(1);
    w.u8(0).u8(255).u32(u32::MAX / 2).u8(20).u8(0).u8(0).u8(0);
    w.u8(0);
    put(out, "explicit_edges.bin", &w.0);
    // Steps: mode 1, a tiny config (see TinyConfig::read), plan arguments, step, alpha, shapes.
    for (name, flags, alpha) in [
        ("step_plain.bin", 0u8, 0u8),
        ("step_long_short.bin", 3, 2),
        ("step_flip_inv_bgr.bin", 0x1C, 4),
    ] {
        let mut w = Writer::default();
        w.u8(1);
        w.u8(3)
            .u8(7)
            .u8(2)
            .u8(3)
            .u8(1)
            .u8(3)
            .u8(2)
            .u8(flags)
            .u8(1)
            .u8(1)
            .u8(0)
            .u8(0);
        w.u16(40).u8(0).u8(0).u64(9);
        w.u8(0).u64(5).u8(alpha);
        w.u8(1);
        w.u8(8).u8(12).u8(16).u8(0x33);
        w.u8(11).u8(20).u8(9).u8(0x77);
        w.u8(0).u8(0).u8(0);
        put(out, name, &w.0);
    }
}

fn store(out: &Path) {
    let tmp = std::env::temp_dir().join(format!("mg-gen-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let shapes: [&[(u32, u32, u32, u32)]; 3] = [
        &[],
        &[(1, 2, 2, 0)],
        &[(2, 4, 5, 0), (3, 2, 3, 7), (1, 6, 1, 2)],
    ];
    for (i, clips) in shapes.iter().enumerate() {
        let path = tmp.join(format!("s{i}.mgstore"));
        let mut w = StoreWriter::create(&path).expect("create a store");
        for (k, &(n, h, wd, label)) in clips.iter().enumerate() {
            let frames: Vec<u8> = (0..n * h * wd * 3)
                .map(|b| (b as u8) ^ (k as u8 * 40))
                .collect();
            w.add(&frames, n, h, wd, label).expect("add a clip");
        }
        w.finish().expect("finish a store");
        let bytes = std::fs::read(&path).expect("read the store");
        for mode in [0u8, 3] {
            let mut seed = vec![mode];
            seed.extend_from_slice(&bytes);
            put(
                out,
                &format!("store{}_clips_mode{mode}.bin", clips.len()),
                &seed,
            );
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

fn video_list(out: &Path) {
    for (name, text) in [
        ("one.csv", "a.mp4 0\n"),
        ("two_comma.csv", "a.mp4,3\nb.mp4,1\n"),
        ("missing.csv", "missing.mp4 2\na.mp4 5\n"),
        (
            "spaces.csv",
            "  dir with space/a.mp4   7  \n\n/abs/x.mp4 1\r\n",
        ),
    ] {
        put(out, name, text.as_bytes());
    }
}

fn mp4(out: &Path) {
    let tmp = std::env::temp_dir().join(format!("mg-gen-seeds-mp4-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    for (name, n, h, w) in [
        ("4x16x16.mp4", 4u32, 16u32, 16u32),
        ("10x8x24.mp4", 10, 8, 24),
    ] {
        let frames: Vec<u8> = (0..n * h * w * 3)
            .map(|i| ((i / 3) % w * 9 + (i / (3 * w * h)) * 20) as u8)
            .collect();
        let path = tmp.join(name);
        video::encode_mp4(&path, &frames, n, h, w, 30).expect("encode a seed video");
        put(out, name, &std::fs::read(&path).expect("read the video"));
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Tiny frame stores written by the library's FrameStoreWriter: none, one and three clips
/// (one with a recorded frame rate), as raw bytes and with every checksum to be recomputed.
fn frame_store(out: &Path) {
    let tmp = std::env::temp_dir().join(format!("mg-gen-seeds-frames-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let shapes: [&[(u32, u32, u32, u32)]; 3] = [
        &[],
        &[(1, 8, 8, 0)],
        &[(2, 8, 16, 0), (3, 16, 8, 7), (1, 8, 8, 2)],
    ];
    for (i, clips) in shapes.iter().enumerate() {
        let path = tmp.join(format!("f{i}.mgframes"));
        let mut w = FrameStoreWriter::create(&path, 50).expect("create a frame store");
        for (k, &(n, h, wd, label)) in clips.iter().enumerate() {
            let frames: Vec<u8> = (0..n * h * wd * 3)
                .map(|b| (b as u8).wrapping_mul(3) ^ (k as u8 * 40))
                .collect();
            let fps = (k == 1).then_some(60.0);
            w.add_at_fps(&frames, n, h, wd, label, fps)
                .expect("add a clip");
        }
        w.finish().expect("finish a frame store");
        let bytes = std::fs::read(&path).expect("read the frame store");
        for mode in [0u8, 3] {
            let mut seed = vec![mode];
            seed.extend_from_slice(&bytes);
            put(
                out,
                &format!("frames{}_clips_mode{mode}.bin", clips.len()),
                &seed,
            );
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

fn main() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = fuzz.parent().expect("the repository root");
    let corpus = fuzz.join("corpus");
    schedule_plan(root, &corpus.join("schedule_plan"));
    collate(&corpus.join("collate"));
    store(&corpus.join("store"));
    frame_store(&corpus.join("frame_store"));
    video_list(&corpus.join("video_list"));
    mp4(&corpus.join("mp4"));
    println!("seeds written under {}", corpus.display());
}
