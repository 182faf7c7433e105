//! `queuelet repair`: salvage every valid record of a damaged log into a new one and
//! say what was dropped. The damaged log is kept beside it for inspection.

use std::path::{Path, PathBuf};

use super::frame::HEADER_LEN;
use super::log::{list_segments, segment_path};
use super::recovery::frame_at;
use super::{StoreError, checkpoint};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    pub kept_records: u64,
    /// (file, offset, bytes) of every stretch that held no valid record.
    pub dropped: Vec<(PathBuf, u64, u64)>,
    /// Where the damaged log now lies.
    pub damaged_copy: Option<PathBuf>,
}

/// Rewrites the log in `dir` from its valid frames (renumbered), keeping the old
/// segments in `dir/../log.damaged-<unix time>`. With a checkpoint, what lies before its
/// position is copied as it is (it is not replayed, and the checkpoint points into it)
/// and only the records after it are salvaged; a damaged checkpoint is dropped, and the
/// log is then replayed from its first remaining segment.
pub fn repair(dir: &Path) -> Result<RepairReport, StoreError> {
    let segments =
        list_segments(dir).map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
    let parent = dir.parent().unwrap_or(Path::new("."));
    let fresh = parent.join("log.repairing");
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh)
            .map_err(|e| StoreError::io(format!("removing {}", fresh.display()), e))?;
    }
    std::fs::create_dir_all(&fresh)
        .map_err(|e| StoreError::io(format!("creating {}", fresh.display()), e))?;
    let mut report = RepairReport::default();
    let checkpoint = match checkpoint::read(dir) {
        Ok(found) => found,
        Err(_) => {
            report.dropped.push((dir.join(checkpoint::FILE), 0, 0));
            None
        }
    };
    let mut next_lsn = checkpoint.as_ref().map_or(1, |(_, p)| p.lsn);
    for &id in &segments {
        let path = segment_path(dir, id);
        let bytes = std::fs::read(&path)
            .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?;
        let mut out = Vec::with_capacity(bytes.len());
        let kept_until = match &checkpoint {
            Some((_, position)) if id < position.segment => bytes.len(),
            Some((_, position)) if id == position.segment => {
                (position.offset as usize).min(bytes.len())
            }
            _ => 0,
        };
        out.extend_from_slice(&bytes[..kept_until]);
        let mut offset = kept_until;
        let mut bad_from: Option<usize> = None;
        while offset < bytes.len() {
            match frame_at(&bytes, offset) {
                Ok(Some(frame)) => {
                    if let Some(from) = bad_from.take() {
                        report
                            .dropped
                            .push((path.clone(), from as u64, (offset - from) as u64));
                    }
                    let start = out.len();
                    out.extend_from_slice(&bytes[offset..frame.end()]);
                    renumber(&mut out[start..], next_lsn);
                    next_lsn += 1;
                    report.kept_records += 1;
                    offset = frame.end();
                }
                Ok(None) => break,
                Err(_) => {
                    bad_from.get_or_insert(offset);
                    offset += 1;
                }
            }
        }
        if let Some(from) = bad_from {
            report
                .dropped
                .push((path.clone(), from as u64, (bytes.len() - from) as u64));
        }
        let target = segment_path(&fresh, id);
        std::fs::write(&target, &out)
            .and_then(|()| std::fs::File::open(&target)?.sync_all())
            .map_err(|e| StoreError::io(format!("writing {}", target.display()), e))?;
    }
    if let Some((snapshot, position)) = &checkpoint {
        checkpoint::write(&fresh, snapshot, *position)?;
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let damaged = parent.join(format!("log.damaged-{stamp}"));
    std::fs::rename(dir, &damaged)
        .and_then(|()| std::fs::rename(&fresh, dir))
        .and_then(|()| std::fs::File::open(parent)?.sync_all())
        .map_err(|e| StoreError::io(format!("replacing {}", dir.display()), e))?;
    report.damaged_copy = Some(damaged);
    Ok(report)
}

/// Gives a copied frame a new record number and checksum.
fn renumber(frame: &mut [u8], lsn: u64) {
    frame[5..13].copy_from_slice(&lsn.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&frame[..13]), &frame[HEADER_LEN..]);
    frame[13..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}
