//! Helpers for the end-to-end tests: find the workspace's binaries and run them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The workspace root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// A binary of the workspace, built by the same `cargo test --workspace` run (it sits
/// beside the `deps/` folder that holds the running test).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running test");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        path.display()
    );
    path
}

/// A `queuelet` server on an ephemeral loopback port with a temporary data directory,
/// ready to serve; killed when dropped.
pub struct Server {
    pub url: String,
    child: Child,
    _data: tempfile::TempDir,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let data = tempfile::tempdir().expect("temporary data directory");
        let mut child = Command::new(binary("queuelet"))
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data.path())
            .args(args)
            .env("QUEUELET_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn queuelet");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("queuelet listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("queuelet reports its address");
        wait_ready(&url, Duration::from_secs(60));
        Server {
            url,
            child,
            _data: data,
        }
    }
}

/// Polls `GET /readyz` until it answers 200.
pub fn wait_ready(url: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let address = url.trim_start_matches("http://");
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(address) {
            let _ = write!(
                stream,
                "GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
            );
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response);
            if response.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("queuelet at {url} not ready after {timeout:?}");
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fenced code block that follows the marker `<!-- readme-test: NAME -->`.
pub fn marked_block(markdown: &str, name: &str) -> Option<String> {
    let marker = format!("<!-- readme-test: {name} -->");
    let after = &markdown[markdown.find(&marker)? + marker.len()..];
    let start = after.find("```")?;
    let body = &after[start..];
    let body = &body[body.find('\n')? + 1..];
    let end = body.find("\n```")?;
    Some(body[..end + 1].to_string())
}
