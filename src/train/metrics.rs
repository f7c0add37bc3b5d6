//! Metrics as JSON lines (one object per logged step or evaluation), appended and flushed as
//! they come so a killed run keeps what it logged.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub struct Metrics {
    path: PathBuf,
    /// None on ranks other than 0, which log nothing.
    file: Option<std::fs::File>,
    pub last: serde_json::Value,
}

impl Metrics {
    pub fn open(path: &Path) -> Result<Metrics> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Metrics {
            path: path.to_path_buf(),
            file: Some(file),
            last: serde_json::Value::Null,
        })
    }

    /// Keeps the last value but writes nothing: what ranks other than 0 log to.
    pub fn discard() -> Metrics {
        Metrics {
            path: PathBuf::new(),
            file: None,
            last: serde_json::Value::Null,
        }
    }

    pub fn write(&mut self, v: serde_json::Value) -> Result<()> {
        let Some(file) = &mut self.file else {
            self.last = v;
            return Ok(());
        };
        writeln!(file, "{v}")
            .and_then(|_| file.flush())
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })?;
        self.last = v;
        Ok(())
    }
}
