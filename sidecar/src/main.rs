use clap::Parser;
use queuelet::config::{Args, Command, LogFormat};
use tracing_subscriber::EnvFilter;

/// Request handling allocates many small, short-lived buffers, which mimalloc's
/// per-thread free lists serve without a shared lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match args.command {
        // A client makes one request at a time.
        Some(Command::Client(_)) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => {
            let cpus = std::thread::available_parallelism().map_or(1, usize::from);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.worker_threads(cpus))
                .enable_all()
                .build()
        }
    };
    match runtime {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(error) => {
            eprintln!("queuelet: cannot start the async runtime: {error}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> std::process::ExitCode {
    if let Some(Command::Client(command)) = args.command {
        return match queuelet::cli::run(command, &mut std::io::stdout().lock()).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("queuelet: {error}");
                std::process::ExitCode::from(1)
            }
        };
    }
    let filter = EnvFilter::try_from_env("QUEUELET_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    match queuelet::server::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "queuelet failed");
            eprintln!("queuelet: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
