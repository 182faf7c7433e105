//! queuelet: a durable message queue server (CMQ's model) with a native JSON API.

pub mod api;
pub mod cli;
pub mod client;
pub mod compaction;
pub mod config;
pub mod engine;
pub mod push;
pub mod server;
pub mod store;
