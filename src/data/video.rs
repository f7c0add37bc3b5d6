//! Video files through FFmpeg's libraries: decoding only the frames a clip needs (seek, then
//! decode forward) to u8 RGB, and encoding the synthetic dataset to H.264 MP4.

use std::path::Path;
use std::sync::Once;

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling::{context::Context as Scaler, flag::Flags};
use ffmpeg::util::frame::video::Video;
use ffmpeg_next as ffmpeg;

use crate::error::{Error, Result};

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Registration cannot fail on FFmpeg >= 4; the log level keeps libav quiet on stderr
        // for the corrupt files the loader is built to skip.
        let _ = ffmpeg::init();
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    });
}

/// Largest frame side decoded: 8K video is 7680 x 4320. A container may claim any size, and
/// the decoder would allocate it.
pub const MAX_SIDE: u32 = 8192;

/// Bytes one decode_range call may produce (1 GiB: 170 frames of 1080p): a container may
/// claim frames that no memory holds.
pub const MAX_DECODE_BYTES: usize = 1 << 30;

/// Consecutive read errors after which the rest of a file is treated as unreadable:
/// ffmpeg-next's packet iterator retries every non-EOF error forever.
const MAX_READ_ERRORS: u32 = 64;

/// Opens `path` with FFmpeg, refusing what would make ffmpeg-next panic (a NUL in the path).
fn open(path: &Path) -> Result<ffmpeg::format::context::Input> {
    init();
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(fail(path, "the path contains a NUL byte"));
    }
    ffmpeg::format::input(&path).map_err(|e| fail(path, e))
}

fn fail(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Decode {
        path: path.to_path_buf(),
        reason: what.to_string(),
    }
}

/// What a container says about its video stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoInfo {
    pub num_frames: u32,
    pub height: u32,
    pub width: u32,
    pub fps: f64,
}

/// Decoded frames [num_frames][height][width][3] starting at `first_frame` of the video.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub first_frame: u32,
    pub num_frames: u32,
    pub height: u32,
    pub width: u32,
    pub frames: Vec<u8>,
}

/// Opens `path` and reads its video stream's frame count, size and rate.
pub fn probe(path: &Path) -> Result<VideoInfo> {
    let ictx = open(path)?;
    let stream = ictx
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or_else(|| fail(path, "no video stream"))?;
    info_of(path, &stream)
}

fn info_of(path: &Path, stream: &ffmpeg::format::stream::Stream) -> Result<VideoInfo> {
    let params = stream.parameters();
    let decoder = ffmpeg::codec::context::Context::from_parameters(params)
        .and_then(|c| c.decoder().video())
        .map_err(|e| fail(path, e))?;
    // The container's base rate (r_frame_rate) is exact for constant-rate video; the average
    // rate is derived from the duration and is off when the last frame's duration is short.
    let valid = |r: ffmpeg::Rational| r.denominator() != 0 && r.numerator() > 0;
    let fps = [stream.rate(), stream.avg_frame_rate()]
        .into_iter()
        .find(|r| valid(*r))
        .map_or(30.0, f64::from);
    let mut frames = stream.frames();
    if frames <= 0 && stream.duration() > 0 {
        frames = (stream.duration() as f64 * f64::from(stream.time_base()) * fps).round() as i64;
    }
    if frames <= 0 || decoder.width() == 0 || decoder.height() == 0 {
        return Err(fail(path, "the video stream reports no frames or no size"));
    }
    let num_frames = u32::try_from(frames)
        .map_err(|_| fail(path, format!("the video stream claims {frames} frames")))?;
    if decoder.width() > MAX_SIDE || decoder.height() > MAX_SIDE {
        return Err(fail(
            path,
            format!(
                "frames of {}x{} are larger than {MAX_SIDE} on a side",
                decoder.width(),
                decoder.height()
            ),
        ));
    }
    if decoder.format() == Pixel::None {
        // libswscale asserts (and aborts the process) on a scaler from no pixel format.
        return Err(fail(path, "the video stream has no pixel format"));
    }
    Ok(VideoInfo {
        num_frames,
        height: decoder.height(),
        width: decoder.width(),
        fps,
    })
}

/// Decodes frames `first..=last` (clamped to the video) to RGB: seeks to the nearest earlier
/// keyframe and decodes forward, dropping frames before `first` and stopping after `last`.
pub fn decode_range(path: &Path, first: u32, last: u32) -> Result<Decoded> {
    let mut ictx = open(path)?;
    let (index, info, time_base, start_pts, params) = {
        let stream = ictx
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or_else(|| fail(path, "no video stream"))?;
        let info = info_of(path, &stream)?;
        let start = if stream.start_time() == ffmpeg::ffi::AV_NOPTS_VALUE {
            0
        } else {
            stream.start_time()
        };
        (
            stream.index(),
            info,
            f64::from(stream.time_base()),
            start,
            stream.parameters(),
        )
    };
    let last = last.min(info.num_frames - 1);
    let first = first.min(last);
    let mut decoder = ffmpeg::codec::context::Context::from_parameters(params)
        .and_then(|c| c.decoder().video())
        .map_err(|e| fail(path, e))?;
    if decoder.format() == Pixel::None {
        return Err(fail(path, "the video stream has no pixel format"));
    }
    if first > 0 {
        // Seek in AV_TIME_BASE units to the keyframe at or before the first wanted frame.
        let ts = (f64::from(first) / info.fps * f64::from(ffmpeg::ffi::AV_TIME_BASE)) as i64;
        ictx.seek(ts, ..ts)
            .map_err(|e| fail(path, format!("seek to frame {first}: {e}")))?;
    }
    let mut scaler = Scaler::get(
        decoder.format(),
        decoder.width(),
        decoder.height(),
        Pixel::RGB24,
        decoder.width(),
        decoder.height(),
        Flags::BILINEAR,
    )
    .map_err(|e| fail(path, e))?;
    let (w, h) = (decoder.width() as usize, decoder.height() as usize);
    let want = (last - first + 1) as usize;
    let bytes = want * w * h * 3;
    if bytes > MAX_DECODE_BYTES {
        return Err(fail(
            path,
            format!(
                "frames {first}..={last} at {w}x{h} would decode {bytes} bytes, more than \
                 {MAX_DECODE_BYTES}: store the videos smaller (multigrid build-store \
                 --short-side)"
            ),
        ));
    }
    // Reserved up to 256 MiB: the rest grows with what really decodes.
    let mut frames = Vec::with_capacity(bytes.min(1 << 28));
    let mut got = 0usize;
    let frame_of = |pts: i64| ((pts - start_pts) as f64 * time_base * info.fps).round() as i64;
    let mut take = |decoded: &Video, frames: &mut Vec<u8>, got: &mut usize| -> Result<bool> {
        let idx = decoded
            .timestamp()
            .map_or(i64::from(first) + *got as i64, frame_of);
        if idx < i64::from(first) {
            return Ok(false);
        }
        let mut rgb = Video::empty();
        scaler.run(decoded, &mut rgb).map_err(|e| fail(path, e))?;
        let stride = rgb.stride(0);
        let data = rgb.data(0);
        for y in 0..h {
            frames.extend_from_slice(&data[y * stride..y * stride + w * 3]);
        }
        *got += 1;
        Ok(*got == want)
    };
    let mut decoded = Video::empty();
    let mut errors = 0;
    'packets: loop {
        // A fresh packet per read: Packet::read does not unreference what a reused packet
        // holds, so reusing one leaks every buffer read (found under valgrind).
        let mut packet = ffmpeg::Packet::empty();
        match packet.read(&mut ictx) {
            Ok(()) => errors = 0,
            Err(ffmpeg::Error::Eof) => break,
            Err(_) if errors < MAX_READ_ERRORS => {
                errors += 1;
                continue;
            }
            Err(_) => break,
        }
        if packet.stream() != index {
            continue;
        }
        decoder.send_packet(&packet).map_err(|e| fail(path, e))?;
        while decoder.receive_frame(&mut decoded).is_ok() {
            if take(&decoded, &mut frames, &mut got)? {
                break 'packets;
            }
        }
    }
    if got < want {
        let _ = decoder.send_eof();
        while got < want && decoder.receive_frame(&mut decoded).is_ok() {
            take(&decoded, &mut frames, &mut got)?;
        }
    }
    if got == 0 {
        return Err(fail(path, format!("no frame decoded in {first}..={last}")));
    }
    Ok(Decoded {
        first_frame: first,
        num_frames: got as u32,
        height: h as u32,
        width: w as u32,
        frames,
    })
}

/// Encodes RGB frames [n][height][width][3] to an H.264 MP4 (MPEG-4 part 2 where libx264 is
/// absent) at `fps`, written to a temporary file and renamed into place.
pub fn encode_mp4(
    path: &Path,
    frames: &[u8],
    num_frames: u32,
    height: u32,
    width: u32,
    fps: u32,
) -> Result<()> {
    init();
    let tmp = path.with_extension("tmp.mp4");
    let result = encode_to(&tmp, frames, num_frames, height, width, fps);
    match result {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn encode_to(
    path: &Path,
    frames: &[u8],
    num_frames: u32,
    height: u32,
    width: u32,
    fps: u32,
) -> Result<()> {
    let (w, h) = (width as usize, height as usize);
    if frames.len() != num_frames as usize * w * h * 3 || width % 2 != 0 || height % 2 != 0 {
        return Err(fail(
            path,
            "frames must be n x h x w x 3 bytes with even h and w",
        ));
    }
    let mut octx = ffmpeg::format::output_as(&path, "mp4").map_err(|e| fail(path, e))?;
    let (codec, x264) = match ffmpeg::encoder::find(ffmpeg::codec::Id::H264) {
        Some(c) => (c, true),
        None => (
            ffmpeg::encoder::find(ffmpeg::codec::Id::MPEG4)
                .ok_or_else(|| fail(path, "no H.264 or MPEG-4 encoder"))?,
            false,
        ),
    };
    let global_header = octx
        .format()
        .flags()
        .contains(ffmpeg::format::Flags::GLOBAL_HEADER);
    let mut ost = octx.add_stream(codec).map_err(|e| fail(path, e))?;
    let mut enc = ffmpeg::codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| fail(path, e))?;
    enc.set_width(width);
    enc.set_height(height);
    enc.set_format(Pixel::YUV420P);
    enc.set_time_base((1, fps as i32));
    enc.set_frame_rate(Some((fps as i32, 1)));
    // Short GOPs keep seeks cheap, as for the pre-processed datasets video models train on.
    enc.set_gop(16);
    enc.set_max_b_frames(0);
    if global_header {
        enc.set_flags(ffmpeg::codec::Flags::GLOBAL_HEADER);
    }
    let mut opts = ffmpeg::Dictionary::new();
    if x264 {
        opts.set("preset", "veryfast");
        opts.set("crf", "18");
    } else {
        enc.set_bit_rate(2_000_000);
    }
    let mut encoder = enc.open_as_with(codec, opts).map_err(|e| fail(path, e))?;
    ost.set_parameters(&encoder);
    ost.set_time_base((1, fps as i32));
    octx.write_header().map_err(|e| fail(path, e))?;
    let ost_tb = octx
        .stream(0)
        .map(|s| s.time_base())
        .ok_or_else(|| fail(path, "no output stream"))?;
    let mut scaler = Scaler::get(
        Pixel::RGB24,
        width,
        height,
        Pixel::YUV420P,
        width,
        height,
        Flags::BILINEAR,
    )
    .map_err(|e| fail(path, e))?;
    let drain = |encoder: &mut ffmpeg::encoder::Video,
                 octx: &mut ffmpeg::format::context::Output|
     -> Result<()> {
        let mut packet = ffmpeg::Packet::empty();
        while encoder.receive_packet(&mut packet).is_ok() {
            packet.set_stream(0);
            packet.rescale_ts((1, fps as i32), ost_tb);
            packet.write_interleaved(octx).map_err(|e| fail(path, e))?;
        }
        Ok(())
    };
    let mut rgb = Video::new(Pixel::RGB24, width, height);
    let mut yuv = Video::empty();
    for t in 0..num_frames as usize {
        let stride = rgb.stride(0);
        let src = &frames[t * w * h * 3..(t + 1) * w * h * 3];
        let data = rgb.data_mut(0);
        for y in 0..h {
            data[y * stride..y * stride + w * 3].copy_from_slice(&src[y * w * 3..(y + 1) * w * 3]);
        }
        scaler.run(&rgb, &mut yuv).map_err(|e| fail(path, e))?;
        yuv.set_pts(Some(t as i64));
        encoder.send_frame(&yuv).map_err(|e| fail(path, e))?;
        drain(&mut encoder, &mut octx)?;
    }
    encoder.send_eof().map_err(|e| fail(path, e))?;
    drain(&mut encoder, &mut octx)?;
    octx.write_trailer().map_err(|e| fail(path, e))?;
    Ok(())
}
