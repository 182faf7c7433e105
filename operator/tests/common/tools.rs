//! External tools the tests run: `kubernetes-validate` (the official OpenAPI schemas) and
//! `helm`. Missing tools skip a test with a message, except under CI (`CI` set), where
//! `.ci/run` installs them and a missing one fails the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The oldest and the newest Kubernetes the operator supports (k8s-openapi 0.29).
pub const KUBERNETES_VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];

/// `found`, or: under CI a panic, elsewhere a SKIPPED line on stderr and `None`.
pub fn required<T>(found: Option<T>, test: &str, missing: &str) -> Option<T> {
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{missing}: CI must run {test}");
        }
        eprintln!("SKIPPED {test}: {missing}");
    }
    found
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// How to run kubernetes-validate here: its script, or the Python module.
pub fn kubernetes_validate(test: &str) -> Option<Vec<String>> {
    let found = if runs("kubernetes-validate", &["--version"]) {
        Some(vec!["kubernetes-validate".into()])
    } else if runs("python3", &["-m", "kubernetes_validate", "--version"]) {
        Some(vec![
            "python3".into(),
            "-m".into(),
            "kubernetes_validate".into(),
        ])
    } else {
        None
    };
    required(
        found,
        test,
        "kubernetes-validate is not installed (python3 -m pip install \
         'kubernetes-validate==1.37.0'; .ci/run does this)",
    )
}

/// Runs `kubernetes-validate --strict` over `files` for every supported Kubernetes
/// version; fails unless each file passes.
pub fn run_validate(command: &[String], files: &[impl AsRef<Path>]) {
    for version in KUBERNETES_VERSIONS {
        let output = Command::new(&command[0])
            .args(&command[1..])
            .args(["--strict", "--kubernetes-version", version])
            .args(files.iter().map(AsRef::as_ref))
            .output()
            .expect("running kubernetes-validate");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let passed = stdout.lines().filter(|l| l.contains(" passed ")).count();
        assert!(
            output.status.success() && passed == files.len(),
            "kubernetes-validate --strict -k {version}: {passed} of {} passed\n{stdout}\n{stderr}",
            files.len()
        );
    }
}

/// Writes each object to its own file in `dir` (named `{label}-{i}-{kind}.yaml`) and
/// returns the paths, ready for [`run_validate`].
pub fn write_objects(dir: &Path, label: &str, objects: &[Value]) -> Vec<PathBuf> {
    objects
        .iter()
        .enumerate()
        .map(|(i, object)| {
            let kind = object["kind"].as_str().expect("a kind").to_lowercase();
            let path = dir.join(format!("{label}-{i}-{kind}.yaml"));
            std::fs::write(&path, serde_saphyr::to_string(object).unwrap()).unwrap();
            path
        })
        .collect()
}

/// The helm binary: `$HELM` (set by .ci/run), else `helm` on PATH.
pub fn helm(test: &str) -> Option<PathBuf> {
    let program = std::env::var_os("HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| "helm".into());
    let found = runs(program.to_str()?, &["version", "--short"]).then_some(program);
    required(
        found,
        test,
        "helm is not installed (.ci/install-kube-tools puts it in .ci/tools/bin; .ci/run \
         exports HELM)",
    )
}

/// Runs `helm` with `args`, returning its output whatever the exit status.
pub fn run_helm(helm: &Path, args: &[&str]) -> Output {
    Command::new(helm)
        .args(args)
        .output()
        .expect("running helm")
}
