//! Large writes and removals beside the log, in small synced steps.
//!
//! A log sync that needs a journal commit (the file grew, or its new blocks were just
//! allocated) waits for everything else in that commit: the data of a large file written
//! beside it, or the blocks of a removed file being freed — and trimmed, on a disk
//! mounted with `discard`. Measured on this kind of machine (ext4 with `discard`) by
//! `examples/beside_the_log.rs`, the longest sync of a 1 KiB append + `fdatasync` loop
//! while a 64 MiB file was, in four rounds:
//! - written and synced once: 52–108 ms; written in synced steps of `STEP`: 5–12 ms;
//! - unlinked: 22–55 ms; shrunk `STEP` at a time, each step synced, then unlinked:
//!   3.5–6.3 ms (the removal took 64–78 ms instead of 44–55).
//!
//! So compaction removes segments, and checkpoints are written, in steps.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// The most a single journal commit carries for these files.
pub const STEP: usize = 2 << 20;

/// Writes all of `bytes` to `file`, syncing its data after every `STEP`.
pub fn write_all(file: &mut File, bytes: &[u8]) -> io::Result<()> {
    for chunk in bytes.chunks(STEP) {
        file.write_all(chunk)?;
        file.sync_data()?;
    }
    Ok(())
}

/// Deletes the file at `path`: shrinks it by `STEP` at a time, each step synced, then
/// unlinks it and syncs its directory. A crash midway leaves a shorter file, which the
/// caller must not need any more.
pub fn remove(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    let mut len = file.metadata()?.len();
    while len > 0 {
        len = len.saturating_sub(STEP as u64);
        file.set_len(len)?;
        file.sync_data()?;
    }
    drop(file);
    std::fs::remove_file(path)?;
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_byte_and_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let bytes: Vec<u8> = (0..STEP * 2 + 12_345).map(|i| (i % 251) as u8).collect();
        let mut file = File::create(&path).unwrap();
        write_all(&mut file, &bytes).unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);

        remove(&path).unwrap();
        assert!(!path.exists());
        // An empty file goes too.
        File::create(&path).unwrap();
        remove(&path).unwrap();
        assert!(!path.exists());
        assert_eq!(
            remove(&path).unwrap_err().kind(),
            io::ErrorKind::NotFound,
            "a missing file is an error the caller sees"
        );
    }
}
