//! The command-line client: `queuelet send|receive|delete|queues|stats`, for people
//! (tables) and scripts (`--json`). Every error exits non-zero with a clear message.

use std::io::{Read, Write};
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};

use crate::api::model::{
    BodyEncoding, ListQueuesQuery, QueueView, ReceiveRequest, ReceivedMessage, SendMessage,
};
use crate::client::{Client, ClientError};
use crate::engine::QueueAttributes;

#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Server URL.
    #[arg(long, env = "QUEUELET_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token.
    #[arg(long, env = "QUEUELET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Reach the server through this Unix socket (its `--unix-socket`) instead of over
    /// TCP; the URL then only names the server.
    #[arg(long, env = "QUEUELET_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    pub queue: String,
    /// The body; `-` or nothing reads it from standard input.
    pub body: Option<String>,
    /// Seconds before the message becomes visible (0–3600).
    #[arg(long)]
    pub delay: Option<u32>,
    /// A tag (repeatable, up to 5).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Debug, Clone, Args)]
pub struct ReceiveArgs {
    pub queue: String,
    /// Most messages to receive (1–16).
    #[arg(long, default_value_t = 1)]
    pub max: usize,
    /// Seconds to wait for a first message (0–30).
    #[arg(long, default_value_t = 0)]
    pub wait: u32,
    /// Delete (acknowledge) each message once it is printed.
    #[arg(long)]
    pub delete: bool,
    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    pub queue: String,
    /// Receipt handles of the messages to delete.
    #[arg(required = true)]
    pub receipt_handles: Vec<String>,
    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Debug, Clone, Subcommand)]
pub enum QueuesAction {
    /// List queues.
    List {
        /// Only queues whose name starts with this.
        #[arg(long)]
        prefix: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Create a queue; attributes as JSON, e.g. '{"visibilityTimeoutSeconds": 60}'.
    Create {
        name: String,
        #[arg(long, default_value = "{}")]
        attributes: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Delete a queue and its messages.
    Delete {
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Show a queue's attributes and counts.
    Attrs {
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// Only this queue.
    pub queue: Option<String>,
    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Send a message.
    Send(SendArgs),
    /// Receive messages (and optionally acknowledge them).
    Receive(ReceiveArgs),
    /// Delete (acknowledge) messages by receipt handle.
    Delete(DeleteArgs),
    /// Manage queues.
    Queues {
        #[command(subcommand)]
        action: QueuesAction,
    },
    /// Message counts per queue.
    Stats(StatsArgs),
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Usage(String),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

fn connect(conn: &Connection) -> Result<Client, CliError> {
    let client = match &conn.socket {
        Some(path) => Client::with_unix_socket(&conn.url, path)?,
        None => Client::new(&conn.url)?,
    };
    Ok(match &conn.token {
        Some(token) => client.with_token(token.clone()),
        None => client,
    })
}

fn print_json<T: serde::Serialize>(out: &mut impl Write, value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Usage(e.to_string()))?;
    writeln!(out, "{text}")?;
    Ok(())
}

/// Prints rows as columns aligned under a header.
fn print_table(
    out: &mut impl Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> Result<(), CliError> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(
        out,
        "{}",
        line(header.iter().map(|h| h.to_string()).collect())
    )?;
    for row in rows {
        writeln!(out, "{}", line(row.clone()))?;
    }
    Ok(())
}

fn queue_rows(queues: &[QueueView]) -> Vec<Vec<String>> {
    queues
        .iter()
        .map(|q| {
            vec![
                q.name.clone(),
                q.stats.active.to_string(),
                q.stats.inactive.to_string(),
                q.stats.delayed.to_string(),
                if q.managed { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect()
}

const QUEUE_HEADER: [&str; 5] = ["QUEUE", "ACTIVE", "INACTIVE", "DELAYED", "MANAGED"];

fn body_text(message: &ReceivedMessage) -> String {
    match message.encoding {
        BodyEncoding::Text => message.body.clone(),
        BodyEncoding::Base64 => format!("base64:{}", message.body),
    }
}

async fn all_queues(client: &Client, prefix: Option<String>) -> Result<Vec<QueueView>, CliError> {
    let mut queues = Vec::new();
    let mut offset = 0;
    loop {
        let page = client
            .list_queues(&ListQueuesQuery {
                prefix: prefix.clone(),
                offset: Some(offset),
                limit: Some(1_000),
            })
            .await?;
        queues.extend(page.queues);
        match page.next_offset {
            Some(next) => offset = next,
            None => return Ok(queues),
        }
    }
}

pub async fn run(command: ClientCommand, out: &mut impl Write) -> Result<(), CliError> {
    match command {
        ClientCommand::Send(args) => {
            let client = connect(&args.conn)?;
            let body = match args.body.as_deref() {
                None | Some("-") => {
                    let mut bytes = Vec::new();
                    std::io::stdin().read_to_end(&mut bytes)?;
                    bytes
                }
                Some(text) => text.as_bytes().to_vec(),
            };
            let (body, encoding) = match String::from_utf8(body) {
                Ok(text) => (text, BodyEncoding::Text),
                Err(e) => (STANDARD.encode(e.as_bytes()), BodyEncoding::Base64),
            };
            let message = SendMessage {
                body,
                encoding,
                delay_seconds: args.delay,
                tags: args.tags,
            };
            let id = client.send(&args.queue, &message).await?;
            if args.conn.json {
                print_json(out, &serde_json::json!({ "id": id }))
            } else {
                writeln!(out, "{id}")?;
                Ok(())
            }
        }
        ClientCommand::Receive(args) => {
            let client = connect(&args.conn)?;
            let request = ReceiveRequest {
                max: Some(args.max),
                wait_seconds: Some(args.wait),
                encoding: BodyEncoding::Text,
            };
            let messages = client.receive(&args.queue, &request).await?;
            if args.conn.json {
                print_json(out, &messages)?;
            } else {
                let rows: Vec<Vec<String>> = messages
                    .iter()
                    .map(|m| {
                        vec![
                            m.id.clone(),
                            m.dequeue_count.to_string(),
                            m.receipt_handle.clone(),
                            body_text(m),
                        ]
                    })
                    .collect();
                print_table(out, &["ID", "RECEIVES", "RECEIPT HANDLE", "BODY"], &rows)?;
            }
            if args.delete && !messages.is_empty() {
                let handles = messages.into_iter().map(|m| m.receipt_handle).collect();
                let results = client.delete_batch(&args.queue, handles).await?;
                if let Some(failed) = results.iter().find(|r| !r.ok) {
                    return Err(CliError::Usage(format!(
                        "printed, but could not delete {}: {}",
                        failed.receipt_handle,
                        failed.message.clone().unwrap_or_default()
                    )));
                }
            }
            Ok(())
        }
        ClientCommand::Delete(args) => {
            let client = connect(&args.conn)?;
            let results = client
                .delete_batch(&args.queue, args.receipt_handles)
                .await?;
            if args.conn.json {
                print_json(out, &results)?;
            } else {
                let rows: Vec<Vec<String>> = results
                    .iter()
                    .map(|r| {
                        vec![
                            r.receipt_handle.clone(),
                            if r.ok {
                                "deleted".into()
                            } else {
                                r.message.clone().unwrap_or_default()
                            },
                        ]
                    })
                    .collect();
                print_table(out, &["RECEIPT HANDLE", "RESULT"], &rows)?;
            }
            match results.iter().filter(|r| !r.ok).count() {
                0 => Ok(()),
                n => Err(CliError::Usage(format!(
                    "{n} of {} not deleted",
                    results.len()
                ))),
            }
        }
        ClientCommand::Queues { action } => match action {
            QueuesAction::List { prefix, conn } => {
                let queues = all_queues(&connect(&conn)?, prefix).await?;
                if conn.json {
                    print_json(out, &queues)
                } else {
                    print_table(out, &QUEUE_HEADER, &queue_rows(&queues))
                }
            }
            QueuesAction::Create {
                name,
                attributes,
                conn,
            } => {
                let attrs: QueueAttributes = serde_json::from_str(&attributes)
                    .map_err(|e| CliError::Usage(format!("invalid --attributes: {e}")))?;
                let queue = connect(&conn)?.create_queue(&name, &attrs).await?;
                if conn.json {
                    print_json(out, &queue)
                } else {
                    writeln!(out, "queue {} ready", queue.name)?;
                    Ok(())
                }
            }
            QueuesAction::Delete { name, conn } => {
                connect(&conn)?.delete_queue(&name).await?;
                if conn.json {
                    print_json(out, &serde_json::json!({ "deleted": name }))
                } else {
                    writeln!(out, "queue {name} deleted")?;
                    Ok(())
                }
            }
            QueuesAction::Attrs { name, conn } => {
                let queue = connect(&conn)?.get_queue(&name).await?;
                print_json(out, &queue)
            }
        },
        ClientCommand::Stats(args) => {
            let client = connect(&args.conn)?;
            let queues = match &args.queue {
                Some(name) => vec![client.get_queue(name).await?],
                None => all_queues(&client, None).await?,
            };
            if args.conn.json {
                print_json(
                    out,
                    &queues
                        .iter()
                        .map(|q| (&q.name, &q.stats))
                        .collect::<std::collections::BTreeMap<_, _>>(),
                )
            } else {
                print_table(out, &QUEUE_HEADER, &queue_rows(&queues))
            }
        }
    }
}
