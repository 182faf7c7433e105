//! The command-line client against a real server: what people and scripts see.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::Server;

fn queuelet(server: &Server, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_queuelet"))
        .args(args)
        .env("QUEUELET_URL", &server.url)
        .env_remove("QUEUELET_TOKEN")
        .env_remove("QUEUELET_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run queuelet");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("queuelet output")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&ok(output)).expect("JSON output")
}

#[test]
fn send_receive_delete_and_queues_from_the_command_line() {
    let server = Server::start(&[]);
    let created = ok(&queuelet(
        &server,
        &[
            "queues",
            "create",
            "orders",
            "--attributes",
            r#"{"visibilityTimeoutSeconds": 60}"#,
        ],
        None,
    ));
    assert_eq!(created.trim(), "queue orders ready");

    let id = ok(&queuelet(
        &server,
        &["send", "orders", "order 1 paid", "--tag", "vip"],
        None,
    ));
    assert!(!id.trim().is_empty());
    ok(&queuelet(
        &server,
        &["send", "orders", "-"],
        Some(b"from stdin"),
    ));
    ok(&queuelet(
        &server,
        &["send", "orders"],
        Some(&[0xff, 0x00, 0x01]),
    ));

    let table = ok(&queuelet(&server, &["stats"], None));
    let mut lines = table.lines();
    assert_eq!(
        lines
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["QUEUE", "ACTIVE", "INACTIVE", "DELAYED", "MANAGED"])
    );
    assert_eq!(
        lines
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["orders", "3", "0", "0", "no"])
    );

    let received = json(&queuelet(
        &server,
        &["receive", "orders", "--max", "16", "--wait", "1", "--json"],
        None,
    ));
    let messages = received.as_array().expect("a list");
    let bodies: Vec<&str> = messages
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["order 1 paid", "from stdin", "/wAB"]);
    assert_eq!(messages[0]["id"].as_str(), Some(id.trim()));
    assert_eq!(messages[0]["tags"][0].as_str(), Some("vip"));
    assert_eq!(messages[2]["encoding"].as_str(), Some("base64"));

    // Delete two by handle; the third is released by its visibility timeout only.
    let handles: Vec<&str> = messages[..2]
        .iter()
        .map(|m| m["receiptHandle"].as_str().unwrap())
        .collect();
    let mut args = vec!["delete", "orders"];
    args.extend(&handles);
    ok(&queuelet(&server, &args, None));
    // Deleting again fails, and says which.
    let again = queuelet(&server, &args, None);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not deleted"));

    let stats = json(&queuelet(&server, &["stats", "orders", "--json"], None));
    assert_eq!(stats["orders"]["active"], 0);
    assert_eq!(stats["orders"]["inactive"], 1);

    // receive --delete acknowledges what it printed.
    ok(&queuelet(&server, &["send", "orders", "ack me"], None));
    let printed = ok(&queuelet(&server, &["receive", "orders", "--delete"], None));
    assert!(printed.contains("ack me"), "{printed}");
    let stats = json(&queuelet(&server, &["stats", "orders", "--json"], None));
    assert_eq!(stats["orders"]["active"], 0);
    assert_eq!(stats["orders"]["inactive"], 1);

    let listed = json(&queuelet(&server, &["queues", "list", "--json"], None));
    assert_eq!(listed[0]["name"], "orders");
    let attrs = json(&queuelet(&server, &["queues", "attrs", "orders"], None));
    assert_eq!(attrs["attributes"]["visibilityTimeoutSeconds"], 60);
    ok(&queuelet(&server, &["queues", "delete", "orders"], None));
    assert_eq!(
        json(&queuelet(&server, &["queues", "list", "--json"], None)),
        Value::Array(vec![])
    );
}

#[test]
fn errors_exit_non_zero_with_a_clear_message() {
    let server = Server::start(&["--tokens", "s3cret"]);
    let refused = queuelet(&server, &["stats"], None);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("401 unauthorized"), "{stderr}");

    let with_token = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--token", "s3cret"]);
        queuelet(&server, &all, None)
    };
    ok(&with_token(&["queues", "create", "a"]));
    let missing = with_token(&["send", "nope", "x"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("queue_not_found"));
    let bad = with_token(&[
        "queues",
        "create",
        "b",
        "--attributes",
        "{\"visibility\": 1}",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid --attributes"));

    let unreachable = Command::new(env!("CARGO_BIN_EXE_queuelet"))
        .args(["stats", "--url", "http://127.0.0.1:9"])
        .output()
        .expect("run queuelet");
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(!unreachable.stderr.is_empty());
}

#[test]
fn the_client_reaches_the_server_through_its_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("q.sock");
    let server = Server::start(&["--unix-socket", socket.to_str().unwrap()]);
    let run = |args: &[&str]| {
        // Nothing listens at the URL's port: only the socket can answer.
        Command::new(env!("CARGO_BIN_EXE_queuelet"))
            .args(args)
            .env("QUEUELET_URL", "http://127.0.0.1:9")
            .env("QUEUELET_SOCKET", &socket)
            .env_remove("QUEUELET_TOKEN")
            .output()
            .expect("run queuelet")
    };
    ok(&run(&["queues", "create", "local"]));
    ok(&run(&["send", "local", "over the socket"]));
    let received = json(&run(&["receive", "local", "--delete", "--json"]));
    assert_eq!(received[0]["body"], "over the socket", "{received}");
    let missing = run(&["stats", "--socket", "/nonexistent/q.sock"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("through /nonexistent/q.sock"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    drop(server);
}
