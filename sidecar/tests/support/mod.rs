//! Starts the real `queuelet` binary on an ephemeral loopback port for a test, with its
//! own data directory, and waits until it is ready.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Server {
    pub url: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
    _temp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts the binary with `args` added after `--listen 127.0.0.1:0`, in a fresh
    /// temporary data directory.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let temp = tempfile::tempdir().expect("temporary data directory");
        let mut server = Self::spawn(temp.path(), args, env);
        server._temp = Some(temp);
        server
    }

    /// Starts the binary on an existing data directory (e.g. to restart after a crash).
    pub fn start_in(data_dir: &Path, args: &[&str]) -> Server {
        Self::spawn(data_dir, args, &[])
    }

    fn spawn(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_queuelet"));
        command
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env_remove("QUEUELET_TOKENS")
            .env_remove("QUEUELET_TOKEN_FILE")
            .env_remove("QUEUELET_CONFIG")
            .env("QUEUELET_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn queuelet");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("queuelet listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("queuelet did not report its address: {:?}", child.wait());
            }
        };
        let server = Server {
            url,
            data_dir: data_dir.to_path_buf(),
            child: Some(child),
            _temp: None,
        };
        server.wait_ready(Duration::from_secs(60));
        server
    }

    /// Polls `/readyz` until it answers 200.
    pub fn wait_ready(&self, timeout: Duration) {
        queuelet_e2e::wait_ready(&self.url, timeout);
    }

    pub fn client(&self) -> queuelet::client::Client {
        queuelet::client::Client::new(&self.url).expect("client")
    }

    /// A client whose every request gives up after `timeout`.
    pub fn client_with_timeout(&self, timeout: Duration) -> queuelet::client::Client {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("HTTP client");
        queuelet::client::Client::with_http(&self.url, http).expect("client")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal("-TERM")
    }

    /// Kills the process with SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) -> ExitStatus {
        self.signal("-KILL")
    }

    fn signal(&mut self, signal: &str) -> ExitStatus {
        let mut child = self.child.take().expect("running server");
        let _ = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        child.wait().expect("wait for queuelet")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the binary with `args` until it exits (or fails the test after `timeout`);
/// returns its status and everything it wrote to stderr.
pub fn run_to_exit(args: &[&str], timeout: Duration) -> (ExitStatus, String) {
    let data = tempfile::tempdir().expect("data directory");
    let mut child = Command::new(env!("CARGO_BIN_EXE_queuelet"))
        .args(args)
        .env("QUEUELET_DATA_DIR", data.path())
        .env_remove("QUEUELET_TOKENS")
        .env_remove("QUEUELET_TOKEN_FILE")
        .env_remove("QUEUELET_CONFIG")
        .env_remove("QUEUELET_INSECURE")
        .env_remove("QUEUELET_LISTEN")
        .env("QUEUELET_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn queuelet");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("queuelet {args:?} still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    (status, stderr)
}
