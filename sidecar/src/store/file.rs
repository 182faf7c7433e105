//! The file seam: everything the log does to a file goes through `LogFile`, so tests can
//! drop unsynced writes, fail a write with ENOSPC, or fail a sync.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

pub trait LogFile: Send {
    /// Appends all of `buf` at the end of the file.
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes what was appended durable (fdatasync).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes (undoing a failed append).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// Opens segment files for appending.
pub trait LogFs: Send + Sync {
    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>>;
    /// Opens an existing segment to append after `len` bytes.
    fn open_append(&self, path: &Path, len: u64) -> io::Result<Box<dyn LogFile>>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

struct RealFile(File);

impl LogFile for RealFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)?;
        self.0.sync_data()
    }
}

impl LogFs for RealFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)?;
        // The new name must survive a crash too.
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(Box::new(RealFile(file)))
    }

    fn open_append(&self, path: &Path, len: u64) -> io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new().append(true).open(path)?;
        if file.metadata()?.len() != len {
            file.set_len(len)?;
            file.sync_data()?;
        }
        Ok(Box::new(RealFile(file)))
    }
}
