//! Settings: command-line flags, `QUEUELET_*` environment variables, and the optional
//! configuration file that declares queues (re-read live when it changes).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, QueueAttributes, TopicDeclaration};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityMode {
    /// Acknowledge a send or delete only after its record is synced to disk.
    Fsync,
    /// Acknowledge once written; sync every --sync-interval-ms. A machine crash may
    /// lose up to one interval of acknowledged changes (a process crash loses none).
    Interval,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Salvage every valid record of a damaged log (the server refuses to start on one),
    /// report what was dropped, and keep the damaged log beside the repaired one.
    Repair,
    #[command(flatten)]
    Client(crate::cli::ClientCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A durable message queue server with a native JSON HTTP API.
///
/// Without flags it serves on 127.0.0.1:8080 with no authentication (loopback only),
/// keeping its data in ./queuelet-data.
/// Listening on any other address requires bearer tokens (--token-file or
/// QUEUELET_TOKENS) unless --insecure is given.
#[derive(Debug, Clone, Parser)]
#[command(name = "queuelet", version)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Directory holding the queues' data (created when missing).
    #[arg(
        long,
        env = "QUEUELET_DATA_DIR",
        default_value = "queuelet-data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// When sends and deletes are acknowledged.
    #[arg(long, env = "QUEUELET_DURABILITY", value_enum, default_value = "fsync")]
    pub durability: DurabilityMode,

    /// Sync period of --durability interval, in milliseconds.
    #[arg(long, env = "QUEUELET_SYNC_INTERVAL_MS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub sync_interval_ms: u64,

    /// How often compaction looks for log segments to reclaim, in milliseconds.
    #[arg(long, env = "QUEUELET_COMPACT_INTERVAL_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub compact_interval_ms: u64,

    /// Size at which a log segment is closed and a new one started, in bytes.
    #[arg(long, env = "QUEUELET_SEGMENT_BYTES", default_value_t = 64 << 20,
          value_parser = clap::value_parser!(u64).range(4_096..=1 << 31))]
    pub segment_bytes: u64,

    /// Address to listen on (HTTP/1.1 and h2c).
    #[arg(long, env = "QUEUELET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Also serve the API on this Unix domain socket, for callers on the same host or in
    /// the same pod (through a shared volume): cheaper per request than TCP. Its mode is
    /// 0660, so the file system decides who may connect; bearer tokens apply as on TCP.
    /// A socket an earlier run left behind is replaced; it is removed at shutdown.
    #[arg(long, env = "QUEUELET_UNIX_SOCKET")]
    pub unix_socket: Option<PathBuf>,

    /// TOML file declaring queues (`[queues.NAME]` tables of attributes) and topics
    /// (`[topics.NAME]`, with `[topics.NAME.subscriptions.SUB]`); re-read when it
    /// changes. Declared queues can only be changed there.
    #[arg(long, env = "QUEUELET_CONFIG")]
    pub config: Option<PathBuf>,

    /// How often to check the configuration file for changes, in milliseconds.
    #[arg(long, env = "QUEUELET_CONFIG_POLL_MS", default_value_t = 2_000)]
    pub config_poll_ms: u64,

    /// File with the accepted bearer tokens, one per line.
    #[arg(long, env = "QUEUELET_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Accepted bearer tokens, comma-separated.
    #[arg(long, env = "QUEUELET_TOKENS", hide_env_values = true)]
    pub tokens: Option<String>,

    /// CMQ API keys for `/v2/index.php`, as `SecretId:SecretKey` pairs, comma-separated.
    /// Without any key, every CMQ request is refused.
    #[arg(long, env = "QUEUELET_CMQ_KEYS", hide_env_values = true)]
    pub cmq_keys: Option<String>,

    /// File with CMQ API keys, one `SecretId:SecretKey` per line.
    #[arg(long, env = "QUEUELET_CMQ_KEY_FILE")]
    pub cmq_key_file: Option<PathBuf>,

    /// PEM file of CA certificates to trust, besides the system's, for the TLS
    /// certificates of `https://` push endpoints (e.g. a cluster's private CA).
    #[arg(long, env = "QUEUELET_PUSH_CA_FILE")]
    pub push_ca_file: Option<PathBuf>,

    /// Allow serving beyond loopback without any token.
    #[arg(long, env = "QUEUELET_INSECURE")]
    pub insecure: bool,

    /// This server's StatefulSet ordinal; carried in message ids and receipt handles.
    #[arg(long, env = "QUEUELET_REPLICA_ORDINAL", default_value_t = 0)]
    pub replica_ordinal: u16,

    /// Most messages per send, receive or delete call.
    #[arg(long, env = "QUEUELET_MAX_BATCH", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_batch: u16,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "QUEUELET_MAX_REQUEST_BYTES", default_value_t = 4 << 20)]
    pub max_request_bytes: usize,

    /// Log format.
    #[arg(long, env = "QUEUELET_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Threads that serve requests (the log has its own). Default: 1 where the process
    /// may use at most 2 CPUs (its cgroup's quota counts), else one per CPU.
    #[arg(long, env = "QUEUELET_WORKER_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
}

impl Args {
    /// How many threads serve requests: `--worker-threads`, or the default for `cpus`.
    ///
    /// On 2 CPUs shared with its callers, a second worker costs more in cross-thread
    /// wake-ups than it serves. Measured there (`queuelet-bench`, 8 producers and 8
    /// consumers, A/B pairs): one worker moved 1.0-1.3x the messages per second of two
    /// with one message per request and 1.1-1.2x with batches (interval mode),
    /// 1.0-1.2x in the fsync mode, on about a fifth less CPU (2-27%). At half load in
    /// the fsync mode its p99 was the same with one message per request and about 1 ms
    /// higher with batches (4.8-6.8 ms against 3.4-5.8 ms, three pairs). More CPUs were
    /// not measured, so they keep the runtime's default.
    pub fn worker_threads(&self, cpus: usize) -> usize {
        match self.worker_threads {
            Some(threads) => usize::from(threads),
            None if cpus <= 2 => 1,
            None => cpus,
        }
    }

    /// Every token from --tokens and --token-file.
    pub fn load_tokens(&self) -> anyhow::Result<Vec<String>> {
        let mut tokens: Vec<String> = self
            .tokens
            .iter()
            .flat_map(|t| t.split(','))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading token file {}", path.display()))?;
            tokens.extend(
                text.lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty() && !l.starts_with('#')),
            );
        }
        Ok(tokens)
    }

    /// Every CMQ key from --cmq-keys and --cmq-key-file, as (SecretId, SecretKey).
    pub fn load_cmq_keys(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut lines: Vec<String> = self
            .cmq_keys
            .iter()
            .flat_map(|k| k.split(','))
            .map(str::to_string)
            .collect();
        if let Some(path) = &self.cmq_key_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading CMQ key file {}", path.display()))?;
            lines.extend(text.lines().map(str::to_string));
        }
        lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| match l.split_once(':') {
                Some((id, key)) if !id.trim().is_empty() && !key.trim().is_empty() => {
                    Ok((id.trim().to_string(), key.trim().to_string()))
                }
                _ => anyhow::bail!("a CMQ key must be SecretId:SecretKey (one is malformed)"),
            })
            .collect()
    }
}

/// The configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Declared queues by name.
    #[serde(default)]
    pub queues: BTreeMap<String, QueueAttributes>,
    /// Declared topics by name, with their subscriptions.
    #[serde(default)]
    pub topics: BTreeMap<String, TopicDeclaration>,
}

impl ConfigFile {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading configuration file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing configuration file {}", path.display()))
    }

    pub fn declarations(&self) -> Vec<(String, QueueAttributes)> {
        self.queues
            .iter()
            .map(|(name, attrs)| (name.clone(), attrs.clone()))
            .collect()
    }

    pub fn topic_declarations(&self) -> Vec<(String, TopicDeclaration)> {
        self.topics
            .iter()
            .map(|(name, topic)| (name.clone(), topic.clone()))
            .collect()
    }
}

/// Applies the file's declarations to the engine.
pub async fn apply(engine: &Engine, path: &Path) -> anyhow::Result<()> {
    let file = ConfigFile::load(path)?;
    engine
        .apply_declarations(&file.declarations())
        .await
        .with_context(|| format!("applying queue declarations from {}", path.display()))?;
    engine
        .apply_topic_declarations(&file.topic_declarations())
        .await
        .with_context(|| format!("applying topic declarations from {}", path.display()))
}

/// Re-applies the file whenever its content changes (a mounted ConfigMap is replaced
/// through a symlink swap, so the content is compared, not the modification time).
pub async fn watch(engine: Arc<Engine>, path: PathBuf, every: Duration, stop: CancellationToken) {
    let mut last = std::fs::read(&path).ok();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let current = match tokio::fs::read(&path).await {
            Ok(current) => current,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read configuration file; keeping the last one");
                continue;
            }
        };
        if last.as_ref() == Some(&current) {
            continue;
        }
        last = Some(current);
        match apply(&engine, &path).await {
            Ok(()) => tracing::info!(path = %path.display(), "configuration file re-applied"),
            Err(error) => {
                tracing::error!(path = %path.display(), error = format!("{error:#}"), "configuration file refused; queues keep their previous settings")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_on_two_cpus_or_fewer_unless_told() {
        let args = |flags: &[&str]| Args::parse_from([&["queuelet"], flags].concat());
        let default = args(&[]);
        assert_eq!(
            [1, 2, 3, 8].map(|cpus| default.worker_threads(cpus)),
            [1, 1, 3, 8]
        );
        let told = args(&["--worker-threads", "4"]);
        assert_eq!([2, 8].map(|cpus| told.worker_threads(cpus)), [4, 4]);
        assert!(Args::try_parse_from(["queuelet", "--worker-threads", "0"]).is_err());
    }

    #[test]
    fn queues_are_declared_by_table() {
        let file = ConfigFile::parse(
            r#"
            [queues.orders]
            visibilityTimeoutSeconds = 60
            [queues.orders.deadLetter]
            queue = "orders-dlq"
            maxReceiveCount = 5
            [queues.orders-dlq]
            "#,
        )
        .unwrap();
        let declared = file.declarations();
        assert_eq!(declared.len(), 2);
        assert_eq!(declared[0].0, "orders");
        assert_eq!(declared[0].1.visibility_timeout_seconds, 60);
        assert_eq!(
            declared[0]
                .1
                .dead_letter
                .as_ref()
                .map(|p| p.max_receive_count),
            Some(Some(5))
        );
        assert_eq!(declared[1].1, QueueAttributes::default());
    }

    #[test]
    fn topics_are_declared_with_their_subscriptions() {
        let file = ConfigFile::parse(
            r#"
            [queues.orders]
            [topics.events]
            filterType = "routingKey"
            [topics.events.subscriptions.to-orders]
            queue = "orders"
            bindingKeys = ["order.*"]
            "#,
        )
        .unwrap();
        let topics = file.topic_declarations();
        assert_eq!(topics.len(), 1);
        let (name, topic) = &topics[0];
        assert_eq!(name, "events");
        assert_eq!(
            topic.attributes().filter_type,
            crate::engine::FilterType::RoutingKey
        );
        let sub = &topic.subscriptions["to-orders"];
        assert_eq!(sub.queue.as_deref(), Some("orders"));
        assert_eq!(sub.binding_keys, vec!["order.*".to_string()]);
    }

    #[test]
    fn unknown_settings_are_refused() {
        let error = ConfigFile::parse("[queues.a]\nvisibilityTimeout = 3\n").unwrap_err();
        assert!(format!("{error:#}").contains("unknown field"), "{error:#}");
    }
}
