//! queuelet-operator: reconciles MessageQueue resources into StatefulSets running the
//! queuelet server. The controller is being built; until then this binary only
//! reports its version and says so.

use std::process::ExitCode;

fn main() -> ExitCode {
    let version = env!("CARGO_PKG_VERSION");
    match std::env::args().nth(1).as_deref() {
        Some("--version") | Some("-V") => {
            println!("queuelet-operator {version}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "queuelet-operator {version}: the controller is not built yet; \
                 run the queue server alone with `cargo run --release -p queuelet`"
            );
            ExitCode::from(2)
        }
    }
}
