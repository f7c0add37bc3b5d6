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
use multigrid_fuzz::{scratch_dir, skip_known, verbose};

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

/// What the harness checks itself before calling decode_range, so known bugs do not stop the
/// fuzzer. One FFmpeg context serves every check.
struct Precheck {
    /// KNOWN BUG (fuzz/README.md, bug 4): decode_range builds its RGB scaler from the decoder's
    /// pixel format before any frame is decoded; when the container gives none
    /// (AV_PIX_FMT_NONE), libswscale asserts and aborts the process.
    no_pixel_format: bool,
    /// KNOWN BUG (fuzz/README.md, bug 5): decode_range reads with ffmpeg-next's `packets()`
    /// iterator, which retries forever while av_read_frame keeps failing with anything but EOF
    /// (ffmpeg-next 7.1 `PacketIter::next`), so some corrupt files hang the caller. Per range:
    /// reading from where decode_range seeks to fails 1000 times in a row (checked with a
    /// bounded loop).
    spins: [bool; 2],
}

/// Reads like decode_range from a fresh context: seek (for `first` > 0), then packets; true
/// when av_read_frame fails 1000 times in a row.
fn spins(path: &std::path::Path, first: u32, fps: f64) -> bool {
    let Ok(mut ictx) = ffmpeg_next::format::input(&path) else {
        return false;
    };
    if first > 0 {
        let ts = (f64::from(first) / fps * f64::from(ffmpeg_next::ffi::AV_TIME_BASE)) as i64;
        if ictx.seek(ts, ..ts).is_err() {
            return false;
        }
    }
    let (mut errors, mut reads) = (0, 0);
    while reads < 100_000 {
        reads += 1;
        // A fresh packet each time: av_read_frame does not unref what a packet holds.
        match ffmpeg_next::Packet::empty().read(&mut ictx) {
            Ok(()) => errors = 0,
            Err(ffmpeg_next::Error::Eof) => return false,
            Err(_) => {
                errors += 1;
                if errors >= 1000 {
                    return true;
                }
            }
        }
    }
    true
}

fn precheck(path: &std::path::Path, firsts: [u32; 2], fps: f64) -> Precheck {
    let mut out = Precheck {
        no_pixel_format: false,
        spins: [false; 2],
    };
    let no_format = ffmpeg_next::format::input(&path).ok().and_then(|ictx| {
        let stream = ictx.streams().best(ffmpeg_next::media::Type::Video)?;
        let decoder = ffmpeg_next::codec::context::Context::from_parameters(stream.parameters())
            .and_then(|c| c.decoder().video())
            .ok()?;
        Some(decoder.format() == ffmpeg_next::format::Pixel::None)
    });
    out.no_pixel_format = no_format == Some(true);
    for (k, first) in firsts.into_iter().enumerate() {
        out.spins[k] = spins(path, first, fps);
    }
    out
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
    // KNOWN BUG (fuzz/README.md, bug 6): info_of narrows the i64 frame count (the container's,
    // or duration x rate) with `as u32`, so 2^32 frames read as 0 (and decode_range then
    // computes `num_frames - 1`, an overflow panic).
    if info.num_frames == 0 && skip_known("frame count truncated to 0") {
        return;
    }
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
    let pre = precheck(&path, ranges.map(|(first, _)| first.min(n - 1)), info.fps);
    if pre.no_pixel_format && skip_known("scaler without a pixel format") {
        return;
    }
    for (k, (first, last)) in ranges.into_iter().enumerate() {
        if pre.spins[k] && skip_known("packets() spins") {
            continue;
        }
        decode(&path, &info, first, last);
    }
});
