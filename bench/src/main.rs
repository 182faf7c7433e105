//! `queuelet-bench`: one workload, many queues, same machine. `run` measures one row
//! (one system, one durability setting, one client style) and appends it as a JSON line;
//! `report` turns the lines into a Markdown table and a PNG chart. `bench/run.sh` starts
//! the servers and drives the whole matrix.

mod adapters;
mod bare_http;
mod body;
mod cpu;
mod ledger;
mod probe;
mod report;
mod workload;

/// The load generator shares the cores with the server it measures: every cycle it saves
/// goes to the server, and its requests allocate many small, short-lived buffers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use adapters::{ClientStyle, SystemKind};
use report::Row;
use workload::Workload;

#[derive(Parser)]
#[command(about = "Side-by-side queue benchmark: queuelet, beanstalkd, Redis, RabbitMQ")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure one row and append it to `--out`.
    Run(RunArgs),
    /// Write the Markdown table and the PNG chart of the rows in `--input`.
    Report {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        markdown: PathBuf,
        #[arg(long)]
        png: Option<PathBuf>,
        #[arg(
            long,
            default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
        )]
        font: PathBuf,
        /// A line printed above the table (the machine, its load, the disk's sync rate).
        #[arg(long)]
        note: Vec<String>,
    },
    /// Serve bare HTTP: queuelet's message routes answered from memory by a bare axum
    /// server, to measure as system `bare-http` (the reference for the HTTP rows).
    BareHttp {
        #[arg(long, default_value = "127.0.0.1:18081")]
        listen: String,
        /// Serve on this Unix socket too.
        #[arg(long)]
        unix_socket: Option<PathBuf>,
    },
    /// Print the disk's raw rate of 4 KiB appends + fdatasync in DIR, and how long one
    /// took (p50, p99, p99.9, max).
    FsyncProbe {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Threads that spin meanwhile, keeping this many cores busy.
        #[arg(long, default_value_t = 0)]
        busy_threads: usize,
    },
}

#[derive(Args)]
struct RunArgs {
    #[arg(long, value_enum)]
    system: SystemKind,
    /// queuelet: http://127.0.0.1:PORT; Redis: redis://127.0.0.1:PORT;
    /// RabbitMQ: amqp://guest:guest@127.0.0.1:PORT/%2f; beanstalkd: 127.0.0.1:PORT.
    #[arg(long)]
    address: String,
    /// queuelet (and bare-http): its producers and consumers connect through this Unix
    /// socket instead of TCP (the queue is still set up through --address). Redis takes
    /// a `redis+unix:///PATH` address instead.
    #[arg(long)]
    unix_socket: Option<PathBuf>,
    /// The durability the server was started with, printed with the row.
    #[arg(long)]
    durability: String,
    #[arg(long, value_enum, default_value = "single")]
    style: ClientStyle,
    #[arg(long, short = 'p', default_value_t = 8)]
    producers: usize,
    #[arg(long, short = 'c', default_value_t = 8)]
    consumers: usize,
    #[arg(long, short = 'n', default_value_t = 100_000)]
    messages: u64,
    #[arg(long, short = 's', default_value_t = 256)]
    size: usize,
    /// Pace the producers at this many messages/s in total.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value_t = 300)]
    timeout_seconds: u64,
    /// The queue (tube, list) name.
    #[arg(long, default_value = "bench")]
    queue: String,
    /// The server's process id, to report its CPU time (its children included).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Append the row as one JSON line here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Exit non-zero unless every message was acknowledged exactly once.
    #[arg(long)]
    check: bool,
}

async fn run(args: RunArgs) -> Result<()> {
    let system = adapters::connect(
        args.system,
        &args.address,
        args.unix_socket.as_deref(),
        &args.queue,
    )?;
    let unix_socket = args.unix_socket.is_some() || args.address.starts_with("redis+unix:");
    let work = Workload {
        producers: args.producers,
        consumers: args.consumers,
        messages: args.messages,
        size: args.size,
        style: args.style,
        rate: args.rate,
        timeout: Duration::from_secs(args.timeout_seconds),
    };
    let server_before = args.server_pid.map(cpu::process_tree_seconds).transpose()?;
    let own_before = cpu::own_seconds()?;
    let outcome = workload::run(system.as_ref(), &work)
        .await
        .with_context(|| format!("{:?} {:?} run", args.system, args.style))?;
    let loadgen_cpu_seconds = cpu::own_seconds()? - own_before;
    let server_cpu_seconds = match (args.server_pid, server_before) {
        (Some(pid), Some(before)) => Some(cpu::process_tree_seconds(pid)? - before),
        _ => None,
    };
    let row = Row {
        system: args.system,
        unix_socket,
        durability: args.durability,
        style: args.style,
        producers: args.producers,
        consumers: args.consumers,
        messages: args.messages,
        size: args.size,
        rate_target: args.rate,
        messages_per_second: outcome.messages_per_second,
        p50_ms: outcome.p50_ms,
        p99_ms: outcome.p99_ms,
        p999_ms: outcome.p999_ms,
        seconds: outcome.seconds,
        server_cpu_seconds,
        loadgen_cpu_seconds,
        tally: outcome.tally,
    };
    print!(
        "{}",
        report::markdown(std::slice::from_ref(&row))
            .lines()
            .nth(2)
            .unwrap_or_default()
    );
    println!();
    if let Some(path) = &args.out {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        writeln!(file, "{}", serde_json::to_string(&row)?)
            .with_context(|| format!("append to {}", path.display()))?;
    }
    if args.check && !row.tally.is_exact() {
        bail!(
            "accounting failed: {} lost, {} duplicates, {} foreign of {} messages",
            row.tally.lost,
            row.tally.duplicates,
            row.tally.foreign,
            row.messages
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::Report {
            input,
            markdown,
            png,
            font,
            note,
        } => {
            let rows = report::read_rows(&input)?;
            let mut text: String = note.iter().map(|line| format!("{line}\n\n")).collect();
            text.push_str(&report::markdown(&rows));
            std::fs::write(&markdown, text)
                .with_context(|| format!("write {}", markdown.display()))?;
            if let Some(png) = png {
                report::chart(&rows, &png, &font)?;
            }
            Ok(())
        }
        Command::BareHttp {
            listen,
            unix_socket,
        } => bare_http::serve(&listen, unix_socket.as_deref()).await,
        Command::FsyncProbe {
            dir,
            seconds,
            busy_threads,
        } => {
            println!(
                "{}",
                probe::fdatasync(&dir, Duration::from_secs_f64(seconds), busy_threads)?
            );
            Ok(())
        }
    }
}
