//! The frame store: every frame of a dataset compressed on its own (JPEG) in one memory-mapped
//! file, so reading a clip costs the frames it samples, not its whole span. A T = 8 clip costs a
//! quarter of a T = 32 clip, the scaling multigrid's batch factors assume; an H.264 video costs
//! its span whatever T is, and the raw clip store ([`super::store`]) is about 20x larger.
//!
//! Layout (little-endian):
//! - header, 64 bytes: magic "MGFRAME1", version u32, codec u32 (1: baseline JPEG, RGB), clip
//!   count u64, frame count u64, index offset u64, index length u64, index CRC32 u32, JPEG
//!   quality u32 (as written; informative), header CRC32 u32 over bytes 0..56, zero padding;
//! - frame data: the encoded frames back to back;
//! - index: per clip its first frame u64, frames u32, height u32, width u32, label u32, frame
//!   rate in thousandths of a frame per second u32 (0: unknown), reserved u32 (32 bytes); then
//!   per frame its offset u64, length u32, CRC32 u32 (16 bytes). A clip's frames follow the
//!   previous clip's in the frame table.
//!
//! Written to a temporary file, synced and renamed into place (the directory synced too), so a
//! store is whole or absent. Opening checks the header, its CRC, the index bounds and CRC and
//! every extent; every frame read checks its CRC and that it decodes to the clip's size, so a
//! truncated or corrupted store is reported, never read as garbage.

use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;

use super::store_file::{fps_milli, map_checked, u32_at, u64_at, TempFile};
use crate::error::{Error, Result};

pub const MAGIC: &[u8; 8] = b"MGFRAME1";
const VERSION: u32 = 1;
const CODEC_JPEG: u32 = 1;
const HEADER_LEN: u64 = 64;
const CLIP_LEN: usize = 32;
const FRAME_LEN: usize = 16;
/// The JPEG quality `multigrid build-store --format jpeg` writes unless told otherwise. (OpenCV's
/// imwrite, which frame-extraction scripts commonly call, defaults to 95.) At 90 the synthetic
/// task trained to the same accuracy as from MP4 (README, "Feeding the GPU").
pub const DEFAULT_QUALITY: u8 = 90;

/// One clip of a frame store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameClip {
    /// Its first frame's row in the frame table.
    pub first: u64,
    pub num_frames: u32,
    pub height: u32,
    pub width: u32,
    pub label: u32,
    /// The source video's frame rate in frames per 1000 s; 0 when unknown.
    pub fps_milli: u32,
}

impl FrameClip {
    /// Frames per second, when known.
    pub fn fps(&self) -> Option<f64> {
        (self.fps_milli > 0).then(|| f64::from(self.fps_milli) / 1000.0)
    }
}

#[derive(Debug, Clone, Copy)]
struct FrameEntry {
    offset: u64,
    len: u32,
    crc: u32,
}

fn corrupt(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Decode {
        path: path.to_path_buf(),
        reason: format!("frame store: {what}"),
    }
}

/// Encodes each of the `num_frames` RGB frames of `frames` ([T][H][W][3] u8) as a baseline
/// JPEG at `quality` (1-100), in parallel on the collation pool.
pub fn encode_frames(
    frames: &[u8],
    num_frames: u32,
    height: u32,
    width: u32,
    quality: u8,
) -> Result<Vec<Vec<u8>>> {
    if !(1..=100).contains(&quality) {
        return Err(Error::InvalidArgument(format!(
            "JPEG quality {quality} is not within 1..=100"
        )));
    }
    if height > u32::from(u16::MAX) || width > u32::from(u16::MAX) {
        return Err(Error::InvalidArgument(format!(
            "a {width}x{height} frame is larger than JPEG's 65535 pixels a side"
        )));
    }
    let want = crate::collate::clip_bytes(num_frames, height, width);
    if want == Some(0) || want != Some(frames.len()) {
        let len = want.map_or("more than memory holds".into(), |n| n.to_string());
        return Err(Error::InvalidArgument(format!(
            "clip of {num_frames} frames {width}x{height} needs {len} bytes, got {}",
            frames.len()
        )));
    }
    let frame = frames.len() / num_frames as usize;
    frames
        .par_chunks_exact(frame)
        .map(|f| {
            let mut out = Vec::with_capacity(frame / 8);
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
                .encode(f, width, height, image::ExtendedColorType::Rgb8)
                .map_err(|e| Error::InvalidArgument(format!("JPEG encoding failed: {e}")))?;
            Ok(out)
        })
        .collect()
}

/// Decodes one JPEG frame into `out` (RGB, `height` x `width` x 3 bytes); a frame of another
/// size, a grayscale or CMYK frame that does not convert, or bytes that are not a JPEG are
/// errors naming what was found.
pub fn decode_jpeg_into(bytes: &[u8], height: u32, width: u32, out: &mut [u8]) -> Result<()> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let fail = |e: &dyn std::fmt::Display| Error::InvalidArgument(format!("JPEG frame: {e}"));
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(width as usize)
        .set_max_height(height as usize);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    d.decode_headers().map_err(|e| fail(&e))?;
    let (w, h) = d.dimensions().ok_or_else(|| fail(&"no frame header"))?;
    if (w, h) != (width as usize, height as usize) {
        return Err(fail(&format!(
            "the frame is {w}x{h}, the clip's frames are {width}x{height}"
        )));
    }
    let need = d
        .output_buffer_size()
        .ok_or_else(|| fail(&"no output size"))?;
    if need != out.len() {
        return Err(fail(&format!(
            "the frame decodes to {need} bytes, not {} (RGB {width}x{height})",
            out.len()
        )));
    }
    d.decode_into(out).map_err(|e| fail(&e))
}

/// The width and height a JPEG's frame header declares.
fn jpeg_dimensions(bytes: &[u8]) -> Result<(u32, u32)> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    let fail = |e: &dyn std::fmt::Display| Error::InvalidArgument(format!("JPEG frame: {e}"));
    let mut d = zune_jpeg::JpegDecoder::new(ZCursor::new(bytes));
    d.decode_headers().map_err(|e| fail(&e))?;
    let (w, h) = d.dimensions().ok_or_else(|| fail(&"no frame header"))?;
    Ok((w as u32, h as u32))
}

/// Writes a frame store; `finish` renames it into place. Dropped unfinished, it leaves nothing.
pub struct FrameStoreWriter {
    file: TempFile,
    quality: u8,
    clips: Vec<FrameClip>,
    frames: Vec<FrameEntry>,
}

impl FrameStoreWriter {
    /// A writer whose [`add_at_fps`](Self::add_at_fps) encodes at `quality` (1-100).
    pub fn create(path: impl AsRef<Path>, quality: u8) -> Result<FrameStoreWriter> {
        if !(1..=100).contains(&quality) {
            return Err(Error::InvalidArgument(format!(
                "JPEG quality {quality} is not within 1..=100"
            )));
        }
        Ok(FrameStoreWriter {
            file: TempFile::create(path.as_ref(), HEADER_LEN as usize)?,
            quality,
            clips: Vec::new(),
            frames: Vec::new(),
        })
    }

    /// Encodes and appends one clip ([T][H][W][3] u8) decoded at `fps` frames per second (None:
    /// unknown); returns its index in the store.
    pub fn add_at_fps(
        &mut self,
        frames: &[u8],
        num_frames: u32,
        height: u32,
        width: u32,
        label: u32,
        fps: Option<f64>,
    ) -> Result<usize> {
        let encoded = encode_frames(frames, num_frames, height, width, self.quality)?;
        self.add_encoded(&encoded, height, width, label, fps)
    }

    /// Appends one clip whose frames are already JPEG-encoded at `height` x `width` (from
    /// [`encode_frames`], e.g. on other threads); returns its index in the store.
    pub fn add_encoded(
        &mut self,
        encoded: &[Vec<u8>],
        height: u32,
        width: u32,
        label: u32,
        fps: Option<f64>,
    ) -> Result<usize> {
        let fps_milli = fps_milli(fps)?;
        let num_frames = u32::try_from(encoded.len())
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "a clip needs 1 to 2^32-1 frames, got {}",
                    encoded.len()
                ))
            })?;
        if crate::collate::clip_bytes(num_frames, height, width).is_none_or(|n| n == 0) {
            return Err(Error::InvalidArgument(format!(
                "clip of {num_frames} frames {width}x{height} has no pixels or too many"
            )));
        }
        let first = self.frames.len() as u64;
        for f in encoded {
            let len = u32::try_from(f.len()).map_err(|_| {
                Error::InvalidArgument(format!("an encoded frame of {} bytes", f.len()))
            })?;
            let offset = self.file.pos;
            self.file.write(f)?;
            self.frames.push(FrameEntry {
                offset,
                len,
                crc: crc32fast::hash(f),
            });
        }
        self.clips.push(FrameClip {
            first,
            num_frames,
            height,
            width,
            label,
            fps_milli,
        });
        Ok(self.clips.len() - 1)
    }

    /// Writes the index and header, syncs, renames the file into place and syncs the directory.
    pub fn finish(mut self) -> Result<PathBuf> {
        let mut index =
            Vec::with_capacity(self.clips.len() * CLIP_LEN + self.frames.len() * FRAME_LEN);
        for c in &self.clips {
            index.extend_from_slice(&c.first.to_le_bytes());
            for v in [c.num_frames, c.height, c.width, c.label, c.fps_milli, 0] {
                index.extend_from_slice(&v.to_le_bytes());
            }
        }
        for f in &self.frames {
            index.extend_from_slice(&f.offset.to_le_bytes());
            index.extend_from_slice(&f.len.to_le_bytes());
            index.extend_from_slice(&f.crc.to_le_bytes());
        }
        let index_at = self.file.pos;
        self.file.write(&index)?;
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&CODEC_JPEG.to_le_bytes());
        header.extend_from_slice(&(self.clips.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.frames.len() as u64).to_le_bytes());
        header.extend_from_slice(&index_at.to_le_bytes());
        header.extend_from_slice(&(index.len() as u64).to_le_bytes());
        header.extend_from_slice(&crc32fast::hash(&index).to_le_bytes());
        header.extend_from_slice(&u32::from(self.quality).to_le_bytes());
        let crc = crc32fast::hash(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        header.resize(HEADER_LEN as usize, 0);
        self.file.commit(&header)
    }
}

/// A read-only, memory-mapped frame store.
pub struct FrameStore {
    path: PathBuf,
    map: Mmap,
    quality: u32,
    clips: Vec<FrameClip>,
    frames: Vec<FrameEntry>,
}

impl FrameStore {
    pub fn open(path: impl AsRef<Path>) -> Result<FrameStore> {
        let path = path.as_ref().to_path_buf();
        let map = map_checked(
            &path,
            HEADER_LEN as usize,
            MAGIC,
            "frame store",
            56,
            corrupt,
        )?;
        let len = map.len() as u64;
        let h = &map[..HEADER_LEN as usize];
        let version = u32_at(h, 8);
        if version != VERSION {
            return Err(corrupt(
                &path,
                format!("version {version}, this library reads {VERSION}"),
            ));
        }
        let codec = u32_at(h, 12);
        if codec != CODEC_JPEG {
            return Err(corrupt(
                &path,
                format!("codec {codec}, this library reads {CODEC_JPEG} (JPEG)"),
            ));
        }
        let (count, frame_count) = (u64_at(h, 16), u64_at(h, 24));
        let (index_at, index_len) = (u64_at(h, 32), u64_at(h, 40));
        let want_len = count
            .checked_mul(CLIP_LEN as u64)
            .zip(frame_count.checked_mul(FRAME_LEN as u64))
            .and_then(|(a, b)| a.checked_add(b));
        if want_len != Some(index_len)
            || index_at < HEADER_LEN
            || index_at.checked_add(index_len) != Some(len)
        {
            return Err(corrupt(
                &path,
                format!("index of {count} clips and {frame_count} frames at {index_at}+{index_len} does not end the {len}-byte file (truncated?)"),
            ));
        }
        let raw = &map[index_at as usize..len as usize];
        if crc32fast::hash(raw) != u32_at(h, 48) {
            return Err(corrupt(&path, "index checksum mismatch"));
        }
        let (clip_raw, frame_raw) = raw.split_at(count as usize * CLIP_LEN);
        let clips: Vec<FrameClip> = clip_raw
            .chunks_exact(CLIP_LEN)
            .map(|e| FrameClip {
                first: u64_at(e, 0),
                num_frames: u32_at(e, 8),
                height: u32_at(e, 12),
                width: u32_at(e, 16),
                label: u32_at(e, 20),
                fps_milli: u32_at(e, 24),
            })
            .collect();
        let frames: Vec<FrameEntry> = frame_raw
            .chunks_exact(FRAME_LEN)
            .map(|e| FrameEntry {
                offset: u64_at(e, 0),
                len: u32_at(e, 8),
                crc: u32_at(e, 12),
            })
            .collect();
        let mut next = 0u64;
        for (i, c) in clips.iter().enumerate() {
            let pixels = crate::collate::clip_bytes(c.num_frames, c.height, c.width);
            if c.first != next
                || pixels.is_none_or(|n| n == 0)
                || c.height > u32::from(u16::MAX)
                || c.width > u32::from(u16::MAX)
            {
                return Err(corrupt(
                    &path,
                    format!(
                        "clip {i} ({} frames of {}x{} from frame {}) has an invalid extent",
                        c.num_frames, c.width, c.height, c.first
                    ),
                ));
            }
            next += u64::from(c.num_frames);
        }
        if next != frame_count {
            return Err(corrupt(
                &path,
                format!("the clips hold {next} frames but the frame table has {frame_count}"),
            ));
        }
        for (k, f) in frames.iter().enumerate() {
            if f.offset < HEADER_LEN
                || f.len == 0
                || f.offset
                    .checked_add(u64::from(f.len))
                    .is_none_or(|e| e > index_at)
            {
                return Err(corrupt(&path, format!("frame {k} has an invalid extent")));
            }
        }
        let quality = u32_at(h, 52);
        Ok(FrameStore {
            path,
            map,
            quality,
            clips,
            frames,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn len(&self) -> usize {
        self.clips.len()
    }
    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }
    /// The JPEG quality the store was written at.
    pub fn quality(&self) -> u32 {
        self.quality
    }
    /// Frames over all clips.
    pub fn total_frames(&self) -> u64 {
        self.frames.len() as u64
    }
    pub fn info(&self, i: usize) -> Result<FrameClip> {
        self.clips.get(i).copied().ok_or_else(|| {
            Error::OutOfRange(format!(
                "clip {i} is past the end of {} ({} clips)",
                self.path.display(),
                self.len()
            ))
        })
    }

    /// The encoded bytes of frame `f` of clip `i`, checked against their CRC.
    pub fn frame_bytes(&self, i: usize, f: u32) -> Result<&[u8]> {
        let c = self.info(i)?;
        if f >= c.num_frames {
            return Err(Error::OutOfRange(format!(
                "frame {f} of clip {i}, which has {}",
                c.num_frames
            )));
        }
        let e = self.frames[(c.first + u64::from(f)) as usize];
        let data = &self.map[e.offset as usize..(e.offset + u64::from(e.len)) as usize];
        if crc32fast::hash(data) != e.crc {
            return Err(corrupt(
                &self.path,
                format!("frame {f} of clip {i}: checksum mismatch (corrupted data)"),
            ));
        }
        Ok(data)
    }

    /// Decodes frame `f` of clip `i` into `out` (height x width x 3 bytes, RGB).
    pub fn decode_frame(&self, i: usize, f: u32, out: &mut [u8]) -> Result<()> {
        let c = self.info(i)?;
        decode_jpeg_into(self.frame_bytes(i, f)?, c.height, c.width, out)
            .map_err(|e| corrupt(&self.path, format!("frame {f} of clip {i}: {e}")))
    }

    /// The frames `idx` of clip `i` (each clamped to the clip), in that order, as [T][H][W][3]
    /// u8 appended to `out`: each distinct frame is decoded once, and only those.
    pub fn gather(&self, i: usize, idx: &[u32], out: &mut Vec<u8>) -> Result<()> {
        let c = self.info(i)?;
        let frame = c.height as usize * c.width as usize * 3;
        if let Some(&f) = idx.first() {
            // The index's frame size is checked against a real frame before a whole clip of
            // that size is allocated.
            let (w, h) = jpeg_dimensions(self.frame_bytes(i, f.min(c.num_frames - 1))?)
                .map_err(|e| corrupt(&self.path, format!("clip {i}: {e}")))?;
            if (w, h) != (c.width, c.height) {
                return Err(corrupt(
                    &self.path,
                    format!(
                        "clip {i}: its frames are {w}x{h}, the index says {}x{}",
                        c.width, c.height
                    ),
                ));
            }
        }
        let base = out.len();
        out.resize(base + idx.len() * frame, 0);
        let last = c.num_frames - 1;
        let mut done: Vec<(u32, usize)> = Vec::with_capacity(idx.len());
        for (k, &f) in idx.iter().enumerate() {
            let f = f.min(last);
            let at = base + k * frame;
            // Sampled indices are sorted, so a repeat is almost always the previous one; a
            // short scan keeps an unsorted caller's list correct too.
            if let Some(&(_, from)) = done.iter().rev().find(|d| d.0 == f) {
                out.copy_within(from..from + frame, at);
                continue;
            }
            self.decode_frame(i, f, &mut out[at..at + frame])?;
            done.push((f, at));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mg-frames-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.join("clips.mgframes")
    }

    /// Smooth gradients that JPEG keeps within a few levels; clip `c`'s frame `f` differs from
    /// every other frame.
    fn clip(c: u32, t: u32, h: u32, w: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity((t * h * w * 3) as usize);
        for f in 0..t {
            for y in 0..h {
                for x in 0..w {
                    v.push((x * 4 + f * 16 + c * 8) as u8);
                    v.push((y * 4 + f * 8) as u8);
                    v.push((128 + c * 30 + f * 4) as u8);
                }
            }
        }
        v
    }

    fn write(path: &Path) -> Vec<Vec<u8>> {
        let dims = [(3u32, 16u32, 24u32), (2, 8, 8), (5, 16, 16)];
        let mut w = FrameStoreWriter::create(path, 95).unwrap();
        let mut clips = Vec::new();
        for (i, &(t, h, wd)) in dims.iter().enumerate() {
            let c = clip(i as u32, t, h, wd);
            let fps = (i == 1).then_some(60.0);
            assert_eq!(w.add_at_fps(&c, t, h, wd, i as u32 * 7, fps).unwrap(), i);
            clips.push(c);
        }
        w.finish().unwrap();
        clips
    }

    fn max_abs_diff(a: &[u8], b: &[u8]) -> u8 {
        a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
    }

    #[test]
    fn round_trip_within_jpeg_error() {
        let p = tmp("rt");
        let clips = write(&p);
        let s = FrameStore::open(&p).unwrap();
        assert_eq!((s.len(), s.total_frames(), s.quality()), (3, 10, 95));
        for (i, c) in clips.iter().enumerate() {
            let info = s.info(i).unwrap();
            assert_eq!(info.label, i as u32 * 7);
            let all: Vec<u32> = (0..info.num_frames).collect();
            let mut out = Vec::new();
            s.gather(i, &all, &mut out).unwrap();
            assert_eq!(out.len(), c.len());
            let d = max_abs_diff(&out, c);
            assert!(d <= 12, "clip {i}: JPEG error {d}");
        }
        assert_eq!(s.info(1).unwrap().fps(), Some(60.0));
        assert_eq!(s.info(0).unwrap().fps(), None);
        assert!(s.info(3).is_err());
        assert!(s.frame_bytes(0, 3).is_err());
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn gather_decodes_the_picked_frames_in_order_and_clamps() {
        let p = tmp("gather");
        write(&p);
        let s = FrameStore::open(&p).unwrap();
        let frame = 16 * 16 * 3;
        let mut each = Vec::new();
        for f in 0..5 {
            let mut one = vec![0u8; frame];
            s.decode_frame(2, f, &mut one).unwrap();
            each.push(one);
        }
        let mut out = vec![7u8; 5];
        s.gather(2, &[4, 1, 1, 9, 0], &mut out).unwrap();
        assert_eq!(&out[..5], &[7; 5], "gather appends");
        let got: Vec<&[u8]> = out[5..].chunks(frame).collect();
        assert_eq!(got, [&each[4], &each[1], &each[1], &each[4], &each[0]]);
    }

    #[test]
    fn unfinished_writer_leaves_nothing_and_bad_input_is_named() {
        let p = tmp("drop");
        {
            let mut w = FrameStoreWriter::create(&p, 90).unwrap();
            w.add_at_fps(&clip(0, 1, 8, 8), 1, 8, 8, 0, None).unwrap();
            let e = w.add_at_fps(&[0; 10], 1, 8, 8, 0, None).unwrap_err();
            assert!(e.to_string().contains("needs 192 bytes, got 10"), "{e}");
            let e = w
                .add_at_fps(&clip(0, 1, 8, 8), 1, 8, 8, 0, Some(-1.0))
                .unwrap_err();
            assert!(e.to_string().contains("frame rate -1"), "{e}");
        }
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 0);
        assert!(FrameStoreWriter::create(&p, 0)
            .err()
            .unwrap()
            .to_string()
            .contains("quality 0"));
    }

    #[test]
    fn truncation_and_corruption_are_detected() {
        let p = tmp("bad");
        write(&p);
        let bytes = std::fs::read(&p).unwrap();
        for cut in [10, 64, bytes.len() - 1] {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let e = FrameStore::open(&p).err().unwrap().to_string();
            assert!(e.contains("truncated"), "cut at {cut}: {e}");
        }
        let mut b = bytes.clone();
        b[20] ^= 1;
        std::fs::write(&p, &b).unwrap();
        let e = FrameStore::open(&p).err().unwrap().to_string();
        assert!(e.contains("header checksum"), "{e}");
        let mut b = bytes.clone();
        let last = b.len() - 5;
        b[last] ^= 1;
        std::fs::write(&p, &b).unwrap();
        let e = FrameStore::open(&p).err().unwrap().to_string();
        assert!(e.contains("index checksum"), "{e}");
        // A flipped bit in clip 0's first frame: that frame fails, the others read.
        let mut b = bytes.clone();
        b[64 + 40] ^= 1;
        std::fs::write(&p, &b).unwrap();
        let s = FrameStore::open(&p).unwrap();
        let mut out = vec![0u8; 16 * 24 * 3];
        let e = s.decode_frame(0, 0, &mut out).unwrap_err().to_string();
        assert!(e.contains("frame 0 of clip 0: checksum mismatch"), "{e}");
        assert!(s.decode_frame(0, 1, &mut out).is_ok());
        // The raw store's bytes are not a frame store.
        std::fs::write(&p, [b"MGCLIPS1".as_slice(), &[0; 100]].concat()).unwrap();
        let e = FrameStore::open(&p).err().unwrap().to_string();
        assert!(e.contains("bad magic"), "{e}");
    }

    #[test]
    fn a_frame_of_another_size_is_an_error_not_garbage() {
        let small = encode_frames(&clip(0, 1, 8, 8), 1, 8, 8, 90).unwrap();
        let mut out = vec![0u8; 16 * 16 * 3];
        let e = decode_jpeg_into(&small[0], 16, 16, &mut out).unwrap_err();
        assert!(e.to_string().contains("8x8"), "{e}");
        let e = decode_jpeg_into(b"not a jpeg", 8, 8, &mut out[..192]).unwrap_err();
        assert!(e.to_string().contains("JPEG frame"), "{e}");
    }
}
