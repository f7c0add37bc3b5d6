//! What the clip store and the frame store share: a file written whole or not at all (a
//! temporary file, synced, renamed into place, the directory synced), mapped read-only with its
//! header checked, little-endian fields and the frame-rate field.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};

pub(super) fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// A frame rate in thousandths of a frame per second, 0 for unknown.
pub(super) fn fps_milli(fps: Option<f64>) -> Result<u32> {
    match fps {
        None => Ok(0),
        Some(f) if f.is_finite() && f > 0.0 && f * 1000.0 < f64::from(u32::MAX) => {
            Ok((f * 1000.0).round() as u32)
        }
        Some(f) => Err(Error::InvalidArgument(format!(
            "frame rate {f} is not a positive number of frames per second"
        ))),
    }
}

/// A file being written beside its final path, with `header_len` bytes reserved for a header
/// written last. Dropped before [`commit`](Self::commit), it leaves nothing.
pub(super) struct TempFile {
    pub path: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
    /// Bytes written so far, the header's included.
    pub pos: u64,
}

impl TempFile {
    pub fn create(path: &Path, header_len: usize) -> Result<TempFile> {
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut file = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io(&tmp))?);
        file.write_all(&vec![0u8; header_len]).map_err(io(&tmp))?;
        Ok(TempFile {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
            pos: header_len as u64,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let file = self.file.as_mut().ok_or_else(|| Error::Decode {
            path: self.path.clone(),
            reason: "writer already finished".into(),
        })?;
        file.write_all(bytes).map_err(io(&self.tmp))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Writes `header` at the start, syncs, renames the file into place and syncs the
    /// directory, so the rename is durable too.
    pub fn commit(&mut self, header: &[u8]) -> Result<PathBuf> {
        let mut file = self.file.take().ok_or_else(|| Error::Decode {
            path: self.path.clone(),
            reason: "writer already finished".into(),
        })?;
        file.seek(SeekFrom::Start(0)).map_err(io(&self.tmp))?;
        file.write_all(header).map_err(io(&self.tmp))?;
        let file = file
            .into_inner()
            .map_err(|e| io(&self.tmp)(e.into_error()))?;
        file.sync_all().map_err(io(&self.tmp))?;
        std::fs::rename(&self.tmp, &self.path).map_err(io(&self.path))?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        Ok(self.path.clone())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Maps `path` read-only and checks the start of its `header_len`-byte header: long enough,
/// `magic`, and the CRC32 of bytes 0..`crc_at` stored at `crc_at`. `corrupt` names what is
/// wrong in the store's own words.
pub(super) fn map_checked(
    path: &Path,
    header_len: usize,
    magic: &[u8; 8],
    what: &str,
    crc_at: usize,
    corrupt: impl Fn(&Path, String) -> Error,
) -> Result<Mmap> {
    let file = File::open(path).map_err(io(path))?;
    // SAFETY: stores are written once and renamed into place; nothing writes one while it is
    // mapped (a concurrent writer would rename a new file over it, not modify this one).
    let map = unsafe { Mmap::map(&file) }.map_err(io(path))?;
    let len = map.len();
    if len < header_len {
        return Err(corrupt(
            path,
            format!("{len} bytes is shorter than the header (truncated?)"),
        ));
    }
    if &map[..8] != magic {
        return Err(corrupt(path, format!("not a {what} (bad magic)")));
    }
    if u32_at(&map, crc_at) != crc32fast::hash(&map[..crc_at]) {
        return Err(corrupt(path, "header checksum mismatch".into()));
    }
    Ok(map)
}
