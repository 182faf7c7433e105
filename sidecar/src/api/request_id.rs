//! Request ids: a random prefix drawn once per process and a counter, so naming a request
//! costs no system call (a v4 UUID asks the kernel for randomness on every request).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};

#[derive(Clone)]
pub struct RequestIds {
    prefix: u64,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    pub fn new() -> Self {
        Self {
            prefix: rand::random(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // `{prefix:016x}-{n:012x}`, written without the formatting machinery: this runs
        // on every request.
        let mut id = [b'-'; 29];
        hex(self.prefix, &mut id[..16]);
        hex(n, &mut id[17..]);
        HeaderValue::from_bytes(&id).ok().map(RequestId::new)
    }
}

/// The low `out.len()` hex digits of `value`, most significant first.
fn hex(mut value: u64, out: &mut [u8]) {
    for digit in out.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_share_the_process_prefix() {
        let mut ids = RequestIds::new();
        let request = Request::new(());
        let mut make = || {
            let id = ids
                .make_request_id(&request)
                .map(|id| id.into_header_value());
            id.and_then(|v| v.to_str().map(str::to_string).ok())
                .unwrap_or_default()
        };
        let (a, b) = (make(), make());
        assert_ne!(a, b);
        assert_eq!(a.len(), 29, "{a}");
        assert_eq!(a[..16], b[..16]);
        assert!(b.ends_with("-000000000002"), "{b}");
        assert_eq!(a[..16], format!("{:016x}", ids.prefix));
    }
}
