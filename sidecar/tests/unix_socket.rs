//! The API served on a Unix domain socket beside TCP (`--unix-socket`): the same routes
//! and tokens, a socket only its owner and group may open, a stale socket replaced after
//! a crash, and neither a live socket nor another kind of file ever replaced.

mod support;

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, run_to_exit};

/// One HTTP/1.1 request on a fresh connection to `socket`: the status and the body.
fn call(
    socket: &Path,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut stream = UnixStream::connect(socket).expect("connect to the Unix socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let body = body.to_string();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    // One write: the server may answer (a refusal, or a route that reads no body) and
    // close as soon as it has the head, so a body written after the head would meet a
    // closed socket.
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: queuelet\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .expect("write the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
    };
    (status, body)
}

#[test]
fn the_api_answers_on_the_socket_with_the_same_tokens() {
    let dir = tempfile::tempdir().expect("socket directory");
    let socket = dir.path().join("queuelet.sock");
    let socket_arg = socket.to_str().expect("a UTF-8 path");
    let server = Server::start(&["--unix-socket", socket_arg, "--tokens", "s3cret"]);

    let mode = std::fs::metadata(&socket)
        .expect("the socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "owner and group only");

    let (status, refused) = call(&socket, "PUT", "/v1/queues/uds", None, &json!({}));
    assert_eq!(status, 401, "{refused}");
    assert_eq!(refused["code"], "unauthorized", "{refused}");

    let token = Some("s3cret");
    let (status, created) = call(&socket, "PUT", "/v1/queues/uds", token, &json!({}));
    assert!((200..300).contains(&status), "{status} {created}");
    let (status, sent) = call(
        &socket,
        "POST",
        "/v1/queues/uds/messages",
        token,
        &json!({"body": "over the socket"}),
    );
    assert_eq!(status, 201, "{sent}");
    let (status, received) = call(
        &socket,
        "POST",
        "/v1/queues/uds/messages/receive",
        token,
        &json!({"max": 1}),
    );
    assert_eq!(status, 200, "{received}");
    assert_eq!(
        received["messages"][0]["body"], "over the socket",
        "{received}"
    );
    assert_eq!(received["messages"][0]["id"], sent["id"], "{received}");

    // The same server answers on TCP.
    let (status, _) = call(&socket, "GET", "/readyz", None, &Value::Null);
    assert_eq!(status, 200);
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );

    assert!(server.terminate().success(), "a clean exit");
    assert!(!socket.exists(), "the socket is removed at shutdown");
}

#[test]
fn a_stale_socket_is_replaced_but_a_live_one_or_a_file_is_not() {
    let dir = tempfile::tempdir().expect("socket directory");
    let socket = dir.path().join("queuelet.sock");
    let socket_arg = socket.to_str().expect("a UTF-8 path");

    // A crash leaves the socket file behind; the next start takes its place.
    let crashed = Server::start(&["--unix-socket", socket_arg]);
    crashed.kill9();
    assert!(socket.exists(), "SIGKILL leaves the socket file");
    let server = Server::start(&["--unix-socket", socket_arg]);
    let (status, _) = call(&socket, "GET", "/readyz", None, &Value::Null);
    assert_eq!(status, 200);

    // A second server does not take the socket of one that is running.
    let (status, stderr) = run_to_exit(
        &["--listen", "127.0.0.1:0", "--unix-socket", socket_arg],
        Duration::from_secs(20),
    );
    assert!(!status.success(), "must not start: {stderr}");
    assert!(stderr.contains("another process serves on"), "{stderr}");
    let (status, _) = call(&socket, "GET", "/readyz", None, &Value::Null);
    assert_eq!(status, 200, "the running server keeps its socket");
    drop(server);

    // Nor does it replace a file that is not a socket.
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "keep me").expect("write a file");
    let (status, stderr) = run_to_exit(
        &[
            "--listen",
            "127.0.0.1:0",
            "--unix-socket",
            file.to_str().expect("UTF-8"),
        ],
        Duration::from_secs(20),
    );
    assert!(!status.success(), "must not start: {stderr}");
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("still there"),
        "keep me"
    );
}
