//! Typed async client for the native API.
