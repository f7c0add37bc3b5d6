//! The clip store: decoded u8 frames of a whole dataset in one memory-mapped file, so epochs
//! after the first read bytes instead of decoding video.
//!
//! Layout (little-endian):
//! - header, 64 bytes: magic "MGCLIPS1", version u32, reserved u32, clip count u64, index
//!   offset u64, index length u64, index CRC32 u32, reserved u32, header CRC32 u32 over bytes
//!   0..48, zero padding;
//! - clip data, each clip 64-byte aligned: [frames][height][width][3] u8;
//! - index: per clip offset u64, length u64, frames u32, height u32, width u32, label u32,
//!   data CRC32 u32, frame rate in thousandths of a frame per second u32 (0: unknown; stores
//!   written before it was recorded hold 0 there) (40 bytes).
//!
//! Written to a temporary file and renamed into place, so a store is whole or absent. Opening
//! checks the header, its CRC, the index bounds and CRC; every read checks the clip's CRC, so a
//! truncated or corrupted store is reported, never read as garbage.

use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::store_file::{fps_milli, map_checked, u32_at, u64_at, TempFile};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"MGCLIPS1";
const VERSION: u32 = 1;
const HEADER_LEN: u64 = 64;
const ENTRY_LEN: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClipInfo {
    pub offset: u64,
    pub len: u64,
    pub num_frames: u32,
    pub height: u32,
    pub width: u32,
    pub label: u32,
    pub crc: u32,
    /// The source video's frame rate in frames per 1000 s; 0 when unknown (then taken to be
    /// `data.target_fps`).
    pub fps_milli: u32,
}

impl ClipInfo {
    /// Frames per second, when known.
    pub fn fps(&self) -> Option<f64> {
        (self.fps_milli > 0).then(|| f64::from(self.fps_milli) / 1000.0)
    }
}

fn corrupt(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Decode {
        path: path.to_path_buf(),
        reason: format!("clip store: {what}"),
    }
}

/// Writes a store; `finish` renames it into place. Dropped unfinished, it leaves nothing.
pub struct StoreWriter {
    file: TempFile,
    index: Vec<ClipInfo>,
}

impl StoreWriter {
    pub fn create(path: impl AsRef<Path>) -> Result<StoreWriter> {
        Ok(StoreWriter {
            file: TempFile::create(path.as_ref(), HEADER_LEN as usize)?,
            index: Vec::new(),
        })
    }

    /// Appends one clip of unknown frame rate; returns its index in the store.
    pub fn add(
        &mut self,
        frames: &[u8],
        num_frames: u32,
        height: u32,
        width: u32,
        label: u32,
    ) -> Result<usize> {
        self.add_at_fps(frames, num_frames, height, width, label, None)
    }

    /// Appends one clip decoded at `fps` frames per second, which `data.target_fps` sampling
    /// needs; returns its index in the store.
    pub fn add_at_fps(
        &mut self,
        frames: &[u8],
        num_frames: u32,
        height: u32,
        width: u32,
        label: u32,
        fps: Option<f64>,
    ) -> Result<usize> {
        let fps_milli = fps_milli(fps)?;
        let want = crate::collate::clip_bytes(num_frames, height, width);
        if want == Some(0) || want != Some(frames.len()) {
            let len = want.map_or("more than memory holds".into(), |n| n.to_string());
            return Err(Error::InvalidArgument(format!(
                "clip of {num_frames} frames {width}x{height} needs {len} bytes, got {}",
                frames.len()
            )));
        }
        let pad = (64 - self.file.pos % 64) % 64;
        self.file.write(&vec![0u8; pad as usize])?;
        let offset = self.file.pos;
        self.file.write(frames)?;
        self.index.push(ClipInfo {
            offset,
            len: frames.len() as u64,
            num_frames,
            height,
            width,
            label,
            crc: crc32fast::hash(frames),
            fps_milli,
        });
        Ok(self.index.len() - 1)
    }

    /// Writes the index and header, syncs, and renames the file into place.
    pub fn finish(mut self) -> Result<PathBuf> {
        let mut index = Vec::with_capacity(self.index.len() * ENTRY_LEN);
        for c in &self.index {
            index.extend_from_slice(&c.offset.to_le_bytes());
            index.extend_from_slice(&c.len.to_le_bytes());
            for v in [c.num_frames, c.height, c.width, c.label, c.crc, c.fps_milli] {
                index.extend_from_slice(&v.to_le_bytes());
            }
        }
        let index_at = self.file.pos;
        self.file.write(&index)?;
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&(self.index.len() as u64).to_le_bytes());
        header.extend_from_slice(&index_at.to_le_bytes());
        header.extend_from_slice(&(index.len() as u64).to_le_bytes());
        header.extend_from_slice(&crc32fast::hash(&index).to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        let crc = crc32fast::hash(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        header.resize(HEADER_LEN as usize, 0);
        self.file.commit(&header)
    }
}

/// A read-only, memory-mapped store.
pub struct ClipStore {
    path: PathBuf,
    map: Mmap,
    index: Vec<ClipInfo>,
}

impl ClipStore {
    pub fn open(path: impl AsRef<Path>) -> Result<ClipStore> {
        let path = path.as_ref().to_path_buf();
        let map = map_checked(&path, HEADER_LEN as usize, MAGIC, "clip store", 48, corrupt)?;
        let len = map.len() as u64;
        let h = &map[..HEADER_LEN as usize];
        let version = u32_at(h, 8);
        if version != VERSION {
            return Err(corrupt(
                &path,
                format!("version {version}, this library reads {VERSION}"),
            ));
        }
        let count = u64_at(h, 16);
        let (index_at, index_len) = (u64_at(h, 24), u64_at(h, 32));
        if count.checked_mul(ENTRY_LEN as u64) != Some(index_len)
            || index_at.checked_add(index_len) != Some(len)
        {
            return Err(corrupt(
                &path,
                format!("index of {count} clips at {index_at}+{index_len} does not end the {len}-byte file (truncated?)"),
            ));
        }
        let raw = &map[index_at as usize..len as usize];
        if crc32fast::hash(raw) != u32_at(h, 40) {
            return Err(corrupt(&path, "index checksum mismatch"));
        }
        let index: Vec<ClipInfo> = raw
            .chunks_exact(ENTRY_LEN)
            .map(|e| ClipInfo {
                offset: u64_at(e, 0),
                len: u64_at(e, 8),
                num_frames: u32_at(e, 16),
                height: u32_at(e, 20),
                width: u32_at(e, 24),
                label: u32_at(e, 28),
                crc: u32_at(e, 32),
                fps_milli: u32_at(e, 36),
            })
            .collect();
        for (i, c) in index.iter().enumerate() {
            let want = crate::collate::clip_bytes(c.num_frames, c.height, c.width);
            if want.map(|n| n as u64) != Some(c.len)
                || c.offset < HEADER_LEN
                || c.offset.checked_add(c.len).is_none_or(|e| e > index_at)
            {
                return Err(corrupt(&path, format!("clip {i} has an invalid extent")));
            }
        }
        Ok(ClipStore { path, map, index })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn len(&self) -> usize {
        self.index.len()
    }
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
    pub fn info(&self, i: usize) -> Result<ClipInfo> {
        self.index.get(i).copied().ok_or_else(|| {
            Error::OutOfRange(format!(
                "clip {i} is past the end of {} ({} clips)",
                self.path.display(),
                self.len()
            ))
        })
    }

    /// The frames of clip `i`, checked against their CRC.
    pub fn frames(&self, i: usize) -> Result<&[u8]> {
        let c = self.info(i)?;
        let data = &self.map[c.offset as usize..(c.offset + c.len) as usize];
        if crc32fast::hash(data) != c.crc {
            return Err(corrupt(
                &self.path,
                format!("clip {i} checksum mismatch (corrupted data)"),
            ));
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mg-store-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join("clips.mgstore")
    }

    fn write(path: &Path) -> Vec<Vec<u8>> {
        let clips: Vec<Vec<u8>> = (0..3u8)
            .map(|i| vec![i * 40 + 1; (2 + i as usize) * 4 * 5 * 3])
            .collect();
        let mut w = StoreWriter::create(path).unwrap();
        for (i, c) in clips.iter().enumerate() {
            w.add(c, 2 + i as u32, 4, 5, i as u32 * 7).unwrap();
        }
        w.finish().unwrap();
        clips
    }

    #[test]
    fn round_trip() {
        let p = tmp("rt");
        let clips = write(&p);
        let s = ClipStore::open(&p).unwrap();
        assert_eq!(s.len(), 3);
        for (i, c) in clips.iter().enumerate() {
            assert_eq!(s.frames(i).unwrap(), &c[..]);
            assert_eq!(s.info(i).unwrap().label, i as u32 * 7);
            assert_eq!(s.info(i).unwrap().offset % 64, 0);
        }
        assert!(s.frames(3).is_err());
        // No temporary file is left behind.
        let n = std::fs::read_dir(p.parent().unwrap()).unwrap().count();
        assert_eq!(n, 1);
    }

    #[test]
    fn unfinished_writer_leaves_nothing() {
        let p = tmp("drop");
        {
            let mut w = StoreWriter::create(&p).unwrap();
            w.add(&[1; 60], 1, 4, 5, 0).unwrap();
        }
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 0);
    }

    #[test]
    fn truncation_and_corruption_are_detected() {
        let p = tmp("bad");
        write(&p);
        let bytes = std::fs::read(&p).unwrap();
        for cut in [10, 64, bytes.len() - 1] {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let e = ClipStore::open(&p).err().unwrap().to_string();
            assert!(e.contains("truncated"), "cut at {cut}: {e}");
        }
        // A flipped bit in the header, in the index, in clip data.
        let mut b = bytes.clone();
        b[20] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert!(ClipStore::open(&p)
            .err()
            .unwrap()
            .to_string()
            .contains("header checksum"));
        let mut b = bytes.clone();
        let last = b.len() - 5;
        b[last] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert!(ClipStore::open(&p)
            .err()
            .unwrap()
            .to_string()
            .contains("index checksum"));
        let mut b = bytes.clone();
        b[64 + 3] ^= 1;
        std::fs::write(&p, &b).unwrap();
        let s = ClipStore::open(&p).unwrap();
        assert!(s
            .frames(0)
            .unwrap_err()
            .to_string()
            .contains("clip 0 checksum"));
        assert!(s.frames(1).is_ok());
        std::fs::write(
            &p,
            b"not a store at all, but long enough to hold a header of sixty-four bytes",
        )
        .unwrap();
        assert!(ClipStore::open(&p)
            .err()
            .unwrap()
            .to_string()
            .contains("bad magic"));
    }
}
