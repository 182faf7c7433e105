//! Reading the log back: every frame is verified; a torn tail of the newest segment is
//! cut away, damage anywhere else stops the start with the file and offset named.

use std::path::{Path, PathBuf};

use super::StoreError;
use super::frame::{self, HEADER_LEN, Header, MAX_PAYLOAD};
use super::log::{list_segments, segment_path};
use crate::engine::record::{BodyLoc, LogPosition, Record};

/// One verified frame inside a segment's bytes.
pub struct Frame<'a> {
    pub offset: usize,
    pub header: Header,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    pub fn end(&self) -> usize {
        self.offset + HEADER_LEN + self.payload.len()
    }
}

/// Why reading stopped before the end of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: usize,
    pub reason: String,
}

/// Reads the frame at `offset`, if a valid one starts there. `Ok(None)` is a clean end
/// (end of data, or a zero header).
pub fn frame_at(bytes: &[u8], offset: usize) -> Result<Option<Frame<'_>>, Damage> {
    let rest = &bytes[offset..];
    if rest.is_empty() {
        return Ok(None);
    }
    let damage = |reason: String| Damage { offset, reason };
    let Some(header_bytes) = rest.get(..HEADER_LEN) else {
        return if rest.iter().all(|b| *b == 0) {
            Ok(None)
        } else {
            Err(damage(format!(
                "{} stray bytes after the last record",
                rest.len()
            )))
        };
    };
    let mut array = [0u8; HEADER_LEN];
    array.copy_from_slice(header_bytes);
    let header = Header::parse(&array);
    if header.is_zero() {
        return if rest.iter().all(|b| *b == 0) {
            Ok(None)
        } else {
            Err(damage("a zero header followed by data".into()))
        };
    }
    if header.len > MAX_PAYLOAD {
        return Err(damage(format!("implausible record length {}", header.len)));
    }
    let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + header.len as usize) else {
        return Err(damage(format!(
            "record of {} bytes cut short at {} bytes",
            header.len,
            rest.len() - HEADER_LEN
        )));
    };
    if !header.checksum_ok(&array, payload) {
        return Err(damage("checksum mismatch".into()));
    }
    Ok(Some(Frame {
        offset,
        header,
        payload,
    }))
}

/// Whether any valid frame numbered after `after_lsn` starts at or beyond `from`.
fn valid_frame_after(bytes: &[u8], from: usize, after_lsn: u64) -> Option<usize> {
    (from..bytes.len().saturating_sub(HEADER_LEN)).find(|&at| {
        let mut array = [0u8; HEADER_LEN];
        array.copy_from_slice(&bytes[at..at + HEADER_LEN]);
        let header = Header::parse(&array);
        header.lsn > after_lsn
            && header.lsn < after_lsn.saturating_add(1 << 32)
            && matches!(frame_at(bytes, at), Ok(Some(_)))
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Segments on disk after recovery, in order.
    pub segments: Vec<u32>,
    /// Bytes of the newest segment that hold records.
    pub tail_len: u64,
    pub next_lsn: u64,
    pub records: u64,
    /// A torn tail that was cut away: the file, where, and how many bytes.
    pub truncated: Option<(PathBuf, u64, u64)>,
}

/// Replays every record of the log in `dir` into `apply`, in order.
/// Replays every record of the log in `dir` into `apply`, in order, starting at
/// `from` (the position a checkpoint was taken at) when given. Segments before it are
/// not read: they hold only message bodies, each checked when it is read.
pub fn recover(
    dir: &Path,
    from: Option<LogPosition>,
    apply: &mut dyn FnMut(Record),
) -> Result<Recovered, StoreError> {
    let segments =
        list_segments(dir).map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
    let start = from.unwrap_or(LogPosition {
        lsn: 1,
        segment: segments.first().copied().unwrap_or(1),
        offset: 0,
    });
    if from.is_some() && !segments.contains(&start.segment) {
        return Err(StoreError::Corrupt {
            file: segment_path(dir, start.segment),
            offset: start.offset,
            reason: "the checkpoint starts in this segment, which is missing".into(),
        });
    }
    let mut recovered = Recovered {
        segments: segments.clone(),
        next_lsn: start.lsn,
        ..Recovered::default()
    };
    for (index, &id) in segments.iter().enumerate() {
        if id < start.segment {
            continue;
        }
        let path = segment_path(dir, id);
        let bytes = std::fs::read(&path)
            .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?;
        let newest = index + 1 == segments.len();
        let mut offset = if id == start.segment {
            start.offset as usize
        } else {
            0
        };
        if offset > bytes.len() {
            return Err(StoreError::Corrupt {
                file: path,
                offset: start.offset,
                reason: format!(
                    "the checkpoint starts beyond the segment's {} bytes",
                    bytes.len()
                ),
            });
        }
        // Records of one request, held back until its last record shows it is whole.
        let mut group: Vec<Record> = Vec::new();
        let mut group_start = (offset, recovered.next_lsn);
        let damage = loop {
            match frame_at(&bytes, offset) {
                Ok(None) if group.is_empty() => break None,
                Ok(None) => {
                    break Some(Damage {
                        offset,
                        reason: format!(
                            "the log ends inside a request, after {} of its records",
                            group.len()
                        ),
                    });
                }
                Ok(Some(frame)) => {
                    if frame.header.lsn != recovered.next_lsn {
                        break Some(Damage {
                            offset,
                            reason: format!(
                                "record number {} where {} was expected",
                                frame.header.lsn, recovered.next_lsn
                            ),
                        });
                    }
                    let loc = BodyLoc {
                        segment: id,
                        offset: offset as u32,
                        len: (frame.end() - offset) as u32,
                    };
                    let kind = frame.header.record_kind();
                    let Some(record) = frame::decode(kind, frame.payload, loc) else {
                        break Some(Damage {
                            offset,
                            reason: format!("undecodable record of kind {kind}"),
                        });
                    };
                    if group.is_empty() {
                        group_start = (offset, recovered.next_lsn);
                    }
                    group.push(record);
                    recovered.next_lsn += 1;
                    offset = frame.end();
                    if !frame.header.more() {
                        recovered.records += group.len() as u64;
                        group.drain(..).for_each(&mut *apply);
                    }
                }
                Err(damage) => break Some(damage),
            }
        };
        let last_valid_lsn = recovered.next_lsn - 1;
        // A request cut short is dropped whole: the log is kept up to where it began.
        let cut = if group.is_empty() {
            damage.as_ref().map(|d| d.offset)
        } else {
            recovered.next_lsn = group_start.1;
            Some(group_start.0)
        };
        if newest {
            recovered.tail_len = cut.unwrap_or(offset) as u64;
        }
        let (Some(damage), Some(cut)) = (damage, cut) else {
            continue;
        };
        let torn = newest && valid_frame_after(&bytes, damage.offset + 1, last_valid_lsn).is_none();
        if !torn {
            return Err(StoreError::Corrupt {
                file: path,
                offset: damage.offset as u64,
                reason: damage.reason,
            });
        }
        let dropped = (bytes.len() - cut) as u64;
        tracing::warn!(file = %path.display(), offset = cut, dropped, reason = %damage.reason,
            "cutting away a torn write at the end of the log");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
        file.set_len(cut as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| StoreError::io(format!("truncating {}", path.display()), e))?;
        recovered.truncated = Some((path, cut as u64, dropped));
    }
    Ok(recovered)
}
