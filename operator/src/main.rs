//! queuelet-operator: reconciles MessageQueue resources into StatefulSets running the
//! queuelet server. The controller is being built; until then the binary prints the CRD
//! and reports its version.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kubernetes operator for queuelet message queues.
#[derive(Debug, Parser)]
#[command(name = "queuelet-operator", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the MessageQueue CustomResourceDefinition as YAML (what crds/messagequeue.yaml holds).
    Crd,
}

fn main() -> ExitCode {
    match Args::parse().command {
        Some(Command::Crd) => {
            print!("{}", queuelet_operator::crd_yaml());
            ExitCode::SUCCESS
        }
        None => {
            eprintln!(
                "queuelet-operator {}: the controller is not built yet; `queuelet-operator crd` \
                 prints the CRD, and `cargo run --release -p queuelet` runs the queue server alone",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::from(2)
        }
    }
}
