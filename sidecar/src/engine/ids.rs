//! Message ids and receipt handles: opaque, unguessable, and carrying the replica
//! ordinal so any replica can tell which one owns a message.
//!
//! Both are base64url strings over a small binary layout closed by a truncated
//! HMAC-SHA256, so a forged or altered value is refused without any lookup.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::EngineError;

const VERSION: u8 = 1;
const TAG_LEN: usize = 9;
/// version + replica + queue uid + seq + receipt generation + tag
const HANDLE_LEN: usize = 1 + 2 + 8 + 8 + 4 + TAG_LEN;

/// The two MACs are keyed once: a clone continues from the keyed state, which saves
/// hashing the key's two padded blocks on every id.
#[derive(Clone)]
pub struct IdCodec {
    replica: u16,
    id_mac: Hmac<Sha256>,
    handle_mac: Hmac<Sha256>,
}

/// What a valid receipt handle names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub queue_uid: u64,
    pub seq: u64,
    pub generation: u32,
}

impl IdCodec {
    pub fn new(replica: u16, id_key: [u8; 32], handle_key: [u8; 32]) -> Self {
        let keyed = |key: &[u8; 32]| {
            <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
        };
        Self {
            replica,
            id_mac: keyed(&id_key),
            handle_mac: keyed(&handle_key),
        }
    }

    pub fn replica(&self) -> u16 {
        self.replica
    }

    fn tag(keyed: &Hmac<Sha256>, domain: u8, payload: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = keyed.clone();
        mac.update(&[domain]);
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&full[..TAG_LEN]);
        out
    }

    pub fn message_id(&self, queue_uid: u64, seq: u64) -> String {
        let mut buf = Vec::with_capacity(1 + 2 + 8 + TAG_LEN);
        buf.push(VERSION);
        buf.extend_from_slice(&self.replica.to_be_bytes());
        buf.extend_from_slice(&seq.to_be_bytes());
        let mut signed = buf.clone();
        signed.extend_from_slice(&queue_uid.to_be_bytes());
        buf.extend_from_slice(&Self::tag(&self.id_mac, b'm', &signed));
        URL_SAFE_NO_PAD.encode(buf)
    }

    pub fn receipt_handle(&self, receipt: Receipt) -> String {
        let mut buf = Vec::with_capacity(HANDLE_LEN);
        buf.push(VERSION);
        buf.extend_from_slice(&self.replica.to_be_bytes());
        buf.extend_from_slice(&receipt.queue_uid.to_be_bytes());
        buf.extend_from_slice(&receipt.seq.to_be_bytes());
        buf.extend_from_slice(&receipt.generation.to_be_bytes());
        let tag = Self::tag(&self.handle_mac, b'r', &buf);
        buf.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(buf)
    }

    pub fn parse_receipt_handle(&self, handle: &str) -> Result<Receipt, EngineError> {
        let buf = URL_SAFE_NO_PAD
            .decode(handle)
            .map_err(|_| EngineError::InvalidReceiptHandle)?;
        if buf.len() != HANDLE_LEN || buf[0] != VERSION {
            return Err(EngineError::InvalidReceiptHandle);
        }
        let (body, tag) = buf.split_at(HANDLE_LEN - TAG_LEN);
        let replica = u16::from_be_bytes([body[1], body[2]]);
        if replica != self.replica {
            return Err(EngineError::WrongReplica(replica));
        }
        // Constant-time comparison through the MAC's own verifier.
        let mut mac = self.handle_mac.clone();
        mac.update(b"r");
        mac.update(body);
        mac.verify_truncated_left(tag)
            .map_err(|_| EngineError::InvalidReceiptHandle)?;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let mut generation = [0u8; 4];
        generation.copy_from_slice(&body[19..23]);
        Ok(Receipt {
            queue_uid: u64_at(3),
            seq: u64_at(11),
            generation: u32::from_be_bytes(generation),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(replica: u16) -> IdCodec {
        IdCodec::new(replica, [7; 32], [9; 32])
    }

    #[test]
    fn receipt_handle_round_trips() {
        let receipt = Receipt {
            queue_uid: 42,
            seq: 9,
            generation: 3,
        };
        let handle = codec(2).receipt_handle(receipt);
        assert_eq!(codec(2).parse_receipt_handle(&handle), Ok(receipt));
    }

    #[test]
    fn altered_receipt_handle_is_refused() {
        let handle = codec(0).receipt_handle(Receipt {
            queue_uid: 1,
            seq: 1,
            generation: 1,
        });
        let mut bytes = URL_SAFE_NO_PAD.decode(&handle).unwrap();
        bytes[12] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(
            codec(0).parse_receipt_handle(&forged),
            Err(EngineError::InvalidReceiptHandle)
        );
        assert_eq!(
            codec(0).parse_receipt_handle("not-a-handle"),
            Err(EngineError::InvalidReceiptHandle)
        );
        let other_key = IdCodec::new(0, [7; 32], [8; 32]);
        assert_eq!(
            other_key.parse_receipt_handle(&handle),
            Err(EngineError::InvalidReceiptHandle)
        );
    }

    #[test]
    fn handle_of_another_replica_names_it() {
        let handle = codec(3).receipt_handle(Receipt {
            queue_uid: 1,
            seq: 1,
            generation: 1,
        });
        assert_eq!(
            codec(0).parse_receipt_handle(&handle),
            Err(EngineError::WrongReplica(3))
        );
    }

    #[test]
    fn message_ids_differ_per_queue_and_seq() {
        let c = codec(0);
        assert_ne!(c.message_id(1, 1), c.message_id(2, 1));
        assert_ne!(c.message_id(1, 1), c.message_id(1, 2));
        assert_eq!(c.message_id(1, 1), c.message_id(1, 1));
    }
}
