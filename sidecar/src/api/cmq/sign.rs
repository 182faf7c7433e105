//! CMQ API 2.0 request signatures: the canonical string (method + host + path + "?" +
//! the parameters but `Signature`, sorted by name, `_` in names read as `.`, raw
//! values joined as `k=v` by `&`), HMAC-SHA1 or HMAC-SHA256 with the SecretKey, base64.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureMethod {
    HmacSha1,
    HmacSha256,
}

impl SignatureMethod {
    /// The `SignatureMethod` parameter; absent means HmacSHA1.
    pub fn parse(value: Option<&str>) -> Option<Self> {
        match value {
            None | Some("HmacSHA1") => Some(Self::HmacSha1),
            Some("HmacSHA256") => Some(Self::HmacSha256),
            Some(_) => None,
        }
    }
}

/// The string a CMQ client signs. `params` are sorted by name (a `BTreeMap` orders
/// them by bytes, as the SDKs' sort does).
pub fn canonical_string(
    method: &str,
    host: &str,
    path: &str,
    params: &BTreeMap<String, String>,
) -> String {
    let joined: Vec<String> = params
        .iter()
        .filter(|(name, _)| name.as_str() != "Signature")
        .map(|(name, value)| format!("{}={value}", name.replace('_', ".")))
        .collect();
    format!(
        "{}{host}{path}?{}",
        method.to_ascii_uppercase(),
        joined.join("&")
    )
}

/// The base64 signature of `text` with `secret_key`.
pub fn sign(method: SignatureMethod, secret_key: &str, text: &str) -> String {
    let digest = match method {
        SignatureMethod::HmacSha1 => {
            mac::<Hmac<sha1::Sha1>>(secret_key.as_bytes(), text.as_bytes())
        }
        SignatureMethod::HmacSha256 => {
            mac::<Hmac<sha2::Sha256>>(secret_key.as_bytes(), text.as_bytes())
        }
    };
    STANDARD.encode(digest)
}

fn mac<M: Mac + KeyInit>(key: &[u8], text: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length, so this cannot fail.
    match <M as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(text);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Compares two signatures in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The configured SecretId → SecretKey pairs.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    keys: BTreeMap<String, String>,
}

impl Keys {
    pub fn new<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        Self {
            keys: pairs.into_iter().collect(),
        }
    }

    pub fn secret_key(&self, secret_id: &str) -> Option<&str> {
        self.keys.get(secret_id).map(String::as_str)
    }
}
