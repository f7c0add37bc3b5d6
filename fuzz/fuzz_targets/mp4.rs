//! Corrupt video files through the decoder (src/data/video.rs: probe and decode_range). Each
//! input is written to a file in a per-process directory under /dev/shm; FFmpeg probes the
//! container (any format it recognises, not only MP4), then the first frames and the last
//! frames (a seek) are decoded.
//!
//! FFmpeg itself is Debian's build, not instrumented: coverage guides only the Rust side, and
//! the mutations of the seed videos find FFmpeg's paths by chance. A crash inside FFmpeg is
//! still reported (SIGSEGV / SIGABRT).
#![no_main]

use libfuzzer_sys::fuzz_target;
use multigrid::data::video;
use multigrid_fuzz::{scratch_dir, verbose};

/// Frames decoded from the start: a training clip's span (T x stride, e.g. 8 x 2).
const FRAMES: u32 = 16;
/// Frames larger than this (4096 x 4096) are not decoded here (memory per input).
const MAX_PIXELS: u64 = 1 << 24;

fn decode(path: &std::path::Path, info: &video::VideoInfo, first: u32, last: u32) {
    let d = video::decode_range(path, first, last);
    if verbose() {
        eprintln!(
            "decode_range({first}, {last}): {:?}",
            d.as_ref()
                .map(|d| (d.first_frame, d.num_frames, d.width, d.height))
        );
    }
    let Ok(d) = d else {
        return;
    };
    assert!(d.num_frames > 0, "decoded 0 frames: {info:?}");
    assert!(
        d.num_frames <= last - first + 1,
        "{} frames for {first}..={last}",
        d.num_frames
    );
    assert_eq!(
        d.frames.len(),
        d.num_frames as usize * d.height as usize * d.width as usize * 3,
        "frames buffer of {} frames of {}x{}: {info:?}",
        d.num_frames,
        d.width,
        d.height
    );
}

fuzz_target!(|data: &[u8]| {
    let path = scratch_dir().join("input.mp4");
    std::fs::write(&path, data).expect("write the input file");
    let info = video::probe(&path);
    if verbose() {
        eprintln!("probe: {info:?}");
    }
    let Ok(info) = info else {
        return;
    };
    assert!(
        info.num_frames > 0 && info.height > 0 && info.width > 0,
        "probe accepted {info:?}"
    );
    // A cost bound of the harness, not a skip of a bug: 16 frames of 4096 x 4096 RGB are
    // already 800 MB. (Before the library bounded frame sides, a 1.8 KB file claiming
    // 17735 x 11572 took 1.4 GB and 3 s per frame: fuzz/README.md, bug 7.)
    if u64::from(info.width) * u64::from(info.height) > MAX_PIXELS {
        return;
    }
    let n = info.num_frames;
    let ranges = [
        (0, (FRAMES - 1).min(n - 1)),
        (n.saturating_sub(2), n.saturating_add(4)),
    ];
    // Bugs 4-6 of fuzz/README.md (an abort in libswscale, an endless read loop, a frame count
    // read as 0) are fixed in the library: nothing is stepped around any more.
    for (first, last) in ranges {
        decode(&path, &info, first, last);
    }
});
