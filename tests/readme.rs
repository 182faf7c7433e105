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

/// The chart checks the README shows, run as written from the workspace root with the
/// helm that `.ci/run` installs (`$HELM`, else `helm` on PATH) and kubernetes-validate.
/// Without them the test is skipped, except under CI, where it fails.
#[test]
fn readme_chart_commands_pass() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let script = marked_block(&readme, "chart").expect("README has the chart block");
    let mut path =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect::<Vec<_>>();
    if let Some(helm) = std::env::var_os("HELM") {
        let dir = std::path::Path::new(&helm)
            .parent()
            .expect("$HELM's folder");
        path.insert(0, dir.to_path_buf());
    }
    let path = std::env::join_paths(path).expect("a PATH");
    let missing: Vec<&str> = ["helm", "kubernetes-validate"]
        .into_iter()
        .filter(|tool| {
            Command::new(tool)
                .arg("--help")
                .env("PATH", &path)
                .output()
                .is_err()
        })
        .collect();
    if !missing.is_empty() {
        let message = format!("{missing:?} not installed (.ci/run installs them)");
        assert!(
            std::env::var_os("CI").is_none(),
            "{message}: CI must run this test"
        );
        eprintln!("SKIPPED readme_chart_commands_pass: {message}");
        return;
    }
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .env("PATH", &path)
        .current_dir(workspace_root())
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "README chart commands failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(stdout.contains("0 chart(s) failed"), "{stdout}");
    let passed = format!("{stdout}{stderr}")
        .lines()
        .filter(|l| l.contains(" passed "))
        .count();
    assert!(
        passed >= 5,
        "kubernetes-validate passed {passed} objects:\n{stdout}\n{stderr}"
    );
}
