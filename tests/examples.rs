//! The consumer of `examples/consumer-sidecar.yaml` run as written: its `sh` + `curl`
//! loop, with the environment the operator injects, against a real server that requires
//! a token and serves on a Unix socket (as the operator runs it beside a consumer), must
//! print every message and delete each one.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use queuelet_e2e::{Server, workspace_root};
use serde_json::Value;

const TOKEN: &str = "example-consumer-token";

fn curl(server: &Server, args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["-fsS", "-H", &format!("authorization: Bearer {TOKEN}")])
        .args(["-H", "content-type: application/json"])
        .args(args.iter().map(|a| a.replace("{url}", &server.url)))
        .output()
        .expect("run curl");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// The consumer container of the example: its shell script and its own environment.
fn consumer() -> (String, Vec<(String, String)>) {
    let path = workspace_root().join("examples/consumer-sidecar.yaml");
    let text = std::fs::read_to_string(&path).expect("examples/consumer-sidecar.yaml");
    let mq: Value = serde_saphyr::from_str(&text).expect("YAML");
    let container = &mq["spec"]["consumer"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"], serde_json::json!(["/bin/sh", "-c"]));
    let script = container["args"][0]
        .as_str()
        .expect("the script")
        .to_owned();
    let env = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    (script, env)
}

#[test]
fn the_consumer_sidecar_example_receives_prints_and_deletes() {
    let dir = tempfile::tempdir().expect("socket directory");
    let socket = dir.path().join("queuelet.sock");
    let socket = socket.to_str().expect("a UTF-8 path");
    let server = Server::start(&["--tokens", TOKEN, "--unix-socket", socket]);
    let (script, env) = consumer();
    let queue = env
        .iter()
        .find(|(k, _)| k == "QUEUE")
        .map(|(_, v)| v.clone())
        .expect("QUEUE");
    curl(
        &server,
        &[
            "-X",
            "PUT",
            &format!("{{url}}/v1/queues/{queue}"),
            "-d",
            "{}",
        ],
    );
    let bodies = ["job 1 ready", "job 2 ready", "job 3 ready"];
    for body in bodies {
        let message = format!("{{\"body\": \"{body}\"}}");
        curl(
            &server,
            &[
                "-X",
                "POST",
                &format!("{{url}}/v1/queues/{queue}/messages"),
                "-d",
                &message,
            ],
        );
    }

    // As the operator runs it: QUEUELET_URL, QUEUELET_SOCKET and QUEUELET_TOKEN beside the
    // container's env.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .envs(env)
        .env("QUEUELET_URL", &server.url)
        .env("QUEUELET_SOCKET", socket)
        .env("QUEUELET_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sh");

    let stats_url = format!("{{url}}/v1/queues/{queue}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let emptied = loop {
        let stats: Value = serde_json::from_str(&curl(&server, &[&stats_url])).expect("JSON");
        if stats["stats"]["active"] == 0 && stats["stats"]["inactive"] == 0 {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The loop never ends by itself; its long poll ends when the server stops.
    child.kill().expect("stop the consumer");
    drop(server);
    let output = child.wait_with_output().expect("the consumer's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        emptied,
        "the consumer did not delete every message:\n{stdout}\n{stderr}"
    );
    for body in bodies {
        assert!(
            stdout.lines().any(|l| l == body),
            "{body:?} not printed:\n{stdout}"
        );
    }
}
