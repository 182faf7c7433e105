//! The README's examples, run as written against a real server.

use std::process::Command;

use queuelet_e2e::{Server, binary, marked_block, workspace_root};

#[test]
fn readme_quickstart_runs_against_a_real_server() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let script = marked_block(&readme, "quickstart").expect("README has the quickstart block");
    assert!(script.contains("http://127.0.0.1:8080"));
    let server = Server::start(&[]);
    let script = script.replace("http://127.0.0.1:8080", &server.url);
    let dir = tempfile::tempdir().expect("temporary directory");
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(dir.path())
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "README quickstart failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    for body in ["order 1 paid", "order 2 paid", "order 3 paid"] {
        assert!(stdout.contains(body), "{body:?} not received:\n{stdout}");
    }
    // All three were deleted: the final stats show an empty queue.
    let stats_at = stdout.rfind("\"active\"").expect("stats printed");
    let stats = &stdout[stats_at..];
    assert!(stats.contains("\"active\": 0"), "{stats}");
    assert!(stats.contains("\"inactive\": 0"), "{stats}");
}

#[test]
fn readme_cli_example_runs_against_a_real_server() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let script = marked_block(&readme, "cli").expect("README has the cli block");
    let server = Server::start(&[]);
    let script = script.replace("http://127.0.0.1:8080", &server.url);
    let bin_dir = binary("queuelet")
        .parent()
        .expect("the binary's folder")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .env("PATH", path)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "README cli example failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("queue invoices ready"), "{stdout}");
    assert!(
        stdout.contains("invoice 7 due") && stdout.contains("invoice 8 due"),
        "{stdout}"
    );
}

#[test]
fn readme_names_the_ci_test_command() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let ci = std::fs::read_to_string(workspace_root().join(".ci/run")).expect(".ci/run");
    let command = "cargo test --workspace";
    assert!(readme.contains(&format!("```sh\n{command}\n```")));
    assert!(
        ci.lines().any(|l| l.trim() == command),
        ".ci/run must run `{command}`"
    );
}
