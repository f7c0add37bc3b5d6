//! `multigrid bench collate`: clips/s of the fused collator at the Kinetics multigrid shapes,
//! against the same work done by PyTorch in Python in the same run, and the output rate against
//! this machine's memcpy bandwidth.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use multigrid::collate::{self, batch_len, resized_size, Clip, ClipParams, Normalize, Rng};

use super::memcpy_gbps;
use crate::CollateArgs;

const SRC_H: u32 = 256;
const SRC_W: u32 = 340;
const SRC_FRAMES: u32 = 64;

/// (T, S, short-side jitter) of the three Kinetics shapes: baseline, stage 0 short cycle,
/// and 158 px.
const SHAPES: [(u32, u32, [u32; 2]); 3] = [
    (32, 224, [256, 320]),
    (8, 112, [128, 320]),
    (16, 158, [181, 320]),
];

pub fn run(o: &CollateArgs) -> Result<(), String> {
    let threads = match o.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    collate::set_num_threads(threads).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&o.work_dir).map_err(|e| format!("{}: {e}", o.work_dir.display()))?;
    let mut rng = Rng::new(1, 0, 0);
    let frame_bytes = (SRC_FRAMES * SRC_H * SRC_W * 3) as usize;
    let raw: Vec<u8> = (0..frame_bytes * o.clips)
        .map(|_| (rng.next_u64() >> 56) as u8)
        .collect();
    let frames_file = o.work_dir.join("bench_frames.u8");
    std::fs::write(&frames_file, &raw).map_err(|e| format!("{}: {e}", frames_file.display()))?;
    let memcpy = memcpy_gbps(o.seconds);
    println!(
        "collation from {SRC_W}x{SRC_H} u8 frames, {} clips per batch, {} threads; memcpy {memcpy:.2} GB/s",
        o.clips, threads
    );
    println!(
        "{:>12} {:>14} {:>14} {:>8} {:>12} {:>12}",
        "shape T x S", "ours clips/s", "torch clips/s", "ratio", "ours GB/s", "vs memcpy"
    );
    for (t, s, jitter) in SHAPES {
        let params: Vec<ClipParams> = (0..o.clips)
            .map(|_| {
                collate::train_params(
                    &mut rng,
                    SRC_FRAMES,
                    SRC_H,
                    SRC_W,
                    t,
                    s,
                    [2, 2],
                    jitter,
                    false,
                    true,
                )
            })
            .collect();
        let clips: Vec<Clip> = raw
            .chunks_exact(frame_bytes)
            .map(|f| Clip {
                frames: f,
                num_frames: SRC_FRAMES,
                height: SRC_H,
                width: SRC_W,
            })
            .collect();
        let mut out = vec![0f32; batch_len(o.clips, t, s)];
        let norm = Normalize::default();
        let ours = rate(o.seconds, o.clips, || {
            collate::collate_explicit(&clips, &params, t, s, &norm, &mut out)
                .map_err(|e| e.to_string())
        })?;
        let torch = torch_rate(o, threads, &frames_file, frame_bytes, t, s, &params)?;
        let gbps = ours * (batch_len(1, t, s) * 4) as f64 / 1e9;
        println!(
            "{:>12} {:>14.1} {:>14.1} {:>7.2}x {:>12.2} {:>11.2}x",
            format!("{t} x {s}"),
            ours,
            torch,
            ours / torch,
            gbps,
            memcpy / gbps
        );
        // Sanity: every crop fits its resized frame.
        debug_assert!(params.iter().all(|p| {
            let (h, w) = resized_size(SRC_H, SRC_W, p.short_side);
            p.crop_x + s <= w && p.crop_y + s <= h
        }));
    }
    Ok(())
}

fn rate(
    seconds: f64,
    clips: usize,
    mut f: impl FnMut() -> Result<(), String>,
) -> Result<f64, String> {
    f()?; // warm-up
    let start = Instant::now();
    let mut reps = 0;
    while reps < 3 || start.elapsed() < Duration::from_secs_f64(seconds) {
        f()?;
        reps += 1;
    }
    Ok((reps * clips) as f64 / start.elapsed().as_secs_f64())
}

fn torch_rate(
    o: &CollateArgs,
    threads: usize,
    frames: &Path,
    frame_bytes: usize,
    t: u32,
    s: u32,
    params: &[ClipParams],
) -> Result<f64, String> {
    let clips: Vec<_> = params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            serde_json::json!({
                "offset": i * frame_bytes, "num_frames": SRC_FRAMES, "height": SRC_H, "width": SRC_W,
                "start_frame": p.start_frame, "stride": p.stride, "short_side": p.short_side,
                "crop_x": p.crop_x, "crop_y": p.crop_y, "flip": p.flip,
            })
        })
        .collect();
    let spec = serde_json::json!({
        "frames_file": frames, "num_frames": t, "crop_size": s, "mean": [0.45, 0.45, 0.45], "std": [0.225, 0.225, 0.225],
        "clips": clips, "threads": threads, "min_seconds": o.seconds,
    });
    let spec_file = o.work_dir.join(format!("bench_{t}_{s}.json"));
    std::fs::write(&spec_file, spec.to_string()).map_err(|e| e.to_string())?;
    let out = Command::new(&o.python)
        .arg(&o.script)
        .arg("bench")
        .arg(&spec_file)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", o.python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            o.script.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    v["clips_per_s"]
        .as_f64()
        .ok_or_else(|| "no clips_per_s from the PyTorch bench".into())
}
