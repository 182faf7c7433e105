//! The container images' Dockerfiles, held to what runs them: the binaries they build are
//! workspace packages, they run as the non-root user the pods expect, and the queue server
//! image's entrypoint, port and data directory are the ones the StatefulSet builder uses.
//! (No container engine runs here; these facts keep the files from rotting silently.)

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{desired, fixture, manifest_dir};
use serde_json::Value;

/// One Dockerfile instruction: its keyword and its arguments, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

fn instructions(dockerfile: &str) -> Vec<Instruction> {
    let path = manifest_dir().join("..").join(dockerfile);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut joined = String::new();
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => joined.push_str(start),
            None => {
                joined.push_str(line);
                let (keyword, args) = joined.split_once(' ').expect("an instruction");
                found.push(Instruction {
                    keyword: keyword.to_uppercase(),
                    args: args.trim().to_owned(),
                });
                joined.clear();
            }
        }
    }
    found
}

/// The instructions of the last stage (what the image is).
fn final_stage(all: &[Instruction]) -> &[Instruction] {
    let last_from = all
        .iter()
        .rposition(|i| i.keyword == "FROM")
        .expect("a FROM");
    &all[last_from..]
}

fn args_of<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|i| i.keyword == keyword)
        .map(|i| i.args.as_str())
        .collect()
}

/// Workspace packages and the binaries each builds, from `cargo metadata`.
fn workspace_binaries() -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(manifest_dir().join(".."))
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let bins = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["kind"].as_array().unwrap().contains(&Value::from("bin")))
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect();
            (p["name"].as_str().unwrap().to_owned(), bins)
        })
        .collect()
}

/// Checks what both images share, and returns the final stage.
fn check_image(dockerfile: &str, package: &str, binary: &str) -> Vec<Instruction> {
    let all = instructions(dockerfile);
    let froms = args_of(&all, "FROM");
    assert_eq!(
        froms.first(),
        Some(&format!("rust:{}-bookworm AS build", env!("CARGO_PKG_RUST_VERSION")).as_str()),
        "{dockerfile}: builds with the workspace's rust-version"
    );
    assert_eq!(
        froms.last(),
        Some(&"gcr.io/distroless/cc-debian12:nonroot"),
        "{dockerfile}"
    );
    let build = format!("cargo build --release --locked -p {package} --bin {binary}");
    assert!(
        args_of(&all, "RUN").iter().any(|r| r.contains(&build)),
        "{dockerfile}: no `{build}`"
    );
    let binaries = workspace_binaries();
    assert!(
        binaries
            .get(package)
            .is_some_and(|bins| bins.iter().any(|b| b == binary)),
        "{dockerfile}: {package} is not a workspace package building {binary}: {binaries:?}"
    );

    let image = final_stage(&all);
    let path = format!("/usr/local/bin/{binary}");
    assert!(
        args_of(image, "COPY")
            .iter()
            .any(|c| c.starts_with("--from=build") && c.ends_with(&path)),
        "{dockerfile}: the binary is not copied to {path}"
    );
    assert_eq!(
        args_of(image, "ENTRYPOINT"),
        [format!("[\"{path}\"]")],
        "{dockerfile}"
    );
    assert_eq!(
        args_of(image, "USER"),
        ["65532:65532"],
        "{dockerfile}: non-root"
    );
    assert_eq!(args_of(image, "EXPOSE"), ["8080"], "{dockerfile}");
    let labels = args_of(image, "LABEL").join(" ");
    for key in ["title", "description", "version", "licenses", "source"] {
        assert!(
            labels.contains(&format!("org.opencontainers.image.{key}=")),
            "{dockerfile}: no OCI label {key}"
        );
    }
    assert!(labels.contains(&format!("org.opencontainers.image.title=\"{binary}\"")));
    image
        .iter()
        .map(|i| Instruction {
            keyword: i.keyword.clone(),
            args: i.args.clone(),
        })
        .collect()
}

/// The value following `flag` in `args`.
fn flag<'a>(args: &'a [Value], flag: &str) -> &'a str {
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag}"));
    args[at + 1].as_str().unwrap()
}

#[test]
fn the_queue_server_image_runs_what_the_stateful_set_expects() {
    let image = check_image("sidecar/Dockerfile", "queuelet", "queuelet");
    let sts = serde_json::to_value(desired(&fixture("minimal")).stateful_set).unwrap();
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["name"], "queuelet");
    assert!(
        container.get("command").is_none(),
        "the builder must rely on the image's ENTRYPOINT"
    );
    let args = container["args"].as_array().unwrap();
    let data_dir = flag(args, "--data-dir");
    assert_eq!(args_of(&image, "VOLUME"), [format!("[\"{data_dir}\"]")]);
    let env = args_of(&image, "ENV").join(" ");
    assert!(
        env.contains(&format!("QUEUELET_DATA_DIR={data_dir}")),
        "{env}"
    );
    let port = container["ports"][0]["containerPort"].to_string();
    assert!(flag(args, "--listen").ends_with(&format!(":{port}")));
    assert!(
        env.contains(&format!("QUEUELET_LISTEN=0.0.0.0:{port}")),
        "{env}"
    );
    let mounted = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"] == data_dir && m.get("readOnly").is_none());
    assert!(mounted, "the data volume is mounted writable at {data_dir}");
    assert_eq!(container["securityContext"]["runAsUser"], 65532);
    assert!(
        args_of(&image, "COPY")
            .contains(&format!("--from=build --chown=65532:65532 /out/data {data_dir}").as_str()),
        "the image's {data_dir} belongs to the non-root user"
    );
}

#[test]
fn the_operator_image_builds_the_operator() {
    let image = check_image(
        "operator/Dockerfile",
        "queuelet-operator",
        "queuelet-operator",
    );
    assert!(args_of(&image, "VOLUME").is_empty());
}

#[test]
fn the_chart_defaults_name_these_images() {
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(manifest_dir().join("../charts/queuelet-operator/values.yaml"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(values["image"]["repository"], "queuelet-operator");
    assert_eq!(values["sidecarImage"]["repository"], "queuelet");
    assert_eq!(
        queuelet_operator::build::Defaults::default().image,
        concat!("queuelet:", env!("CARGO_PKG_VERSION")),
        "the operator's own default matches the chart's sidecarImage default"
    );
}

#[test]
fn the_build_context_keeps_what_cargo_needs() {
    let ignore = std::fs::read_to_string(manifest_dir().join("../.dockerignore")).unwrap();
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for excluded in ["target/", ".git/"] {
        assert!(
            patterns.contains(&excluded),
            ".dockerignore leaves out {excluded}"
        );
    }
    // Every workspace member (and the lock file) is needed for `cargo build --locked`.
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "sidecar",
        "operator",
        "tests",
        "src",
        "*.rs",
    ] {
        assert!(
            !patterns.iter().any(|p| p.trim_end_matches('/') == needed),
            ".dockerignore must not leave out {needed}"
        );
    }
}
