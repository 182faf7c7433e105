//! The Helm chart `charts/queuelet-operator`: its version follows the workspace, its CRD
//! is the generated one, what it renders (default values and each `ci/*.yaml`) passes
//! `helm lint --strict` and the Kubernetes OpenAPI schemas, its RBAC is exactly
//! `files/rules.yaml`, and its values schema refuses bad values.

mod common;

use std::path::{Path, PathBuf};

use common::{manifest_dir, tools};
use serde_json::{Value, json};

const RELEASE: &str = "queuelet-operator";
const NAMESPACE: &str = "queuelet-system";

fn chart_dir() -> PathBuf {
    manifest_dir().join("../charts/queuelet-operator")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The non-default values files the chart is tested with.
fn ci_values_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("charts/queuelet-operator/ci")
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no values files in ci/");
    files
}

/// `helm template` of the chart with `values` files; panics with helm's words on failure.
fn render(helm: &Path, values: &[&Path]) -> Vec<Value> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
    ];
    for file in values {
        args.extend(["--values", file.to_str().unwrap()]);
    }
    let output = tools::run_helm(helm, &args);
    let stdout = String::from_utf8(output.stdout).expect("helm prints UTF-8");
    assert!(
        output.status.success(),
        "helm {}: {}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&stdout).unwrap_or_else(|e| panic!("{e}\n{stdout}"));
    documents.into_iter().filter(|d| !d.is_null()).collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    match of_kind(objects, kind).as_slice() {
        [object] => object,
        other => panic!("expected one {kind}, found {}", other.len()),
    }
}

/// The CRD-backed objects (the ServiceMonitor) are left out: kubernetes-validate knows only
/// the built-in kinds. They are checked field by field instead.
fn validate_built_in(test: &str, label: &str, objects: &[Value]) {
    let Some(command) = tools::kubernetes_validate(test) else {
        return;
    };
    let built_in: Vec<Value> = objects
        .iter()
        .filter(|o| o["apiVersion"] != "monitoring.coreos.com/v1")
        .cloned()
        .collect();
    let dir = tempfile::tempdir().unwrap();
    tools::run_validate(
        &command,
        &tools::write_objects(dir.path(), label, &built_in),
    );
}

fn rules_file(name: &str) -> Value {
    yaml(&chart_dir().join("files").join(name))
}

fn operator_container(objects: &[Value]) -> &Value {
    let deployment = one(objects, "Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1);
    &containers[0]
}

fn args(objects: &[Value]) -> Vec<&str> {
    operator_container(objects)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("a string argument"))
        .collect()
}

/// What holds whatever the values: the operator runs locked down, probed on its `http`
/// port, with its own identity from the downward API.
/// The operator binary parses the rendered arguments (then prints its help, so it does
/// not start): a flag the chart passes and the operator lacks fails here.
fn assert_the_operator_accepts_its_args(objects: &[Value]) {
    let args = args(objects);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_queuelet-operator"))
        .args(&args)
        .arg("--help")
        .output()
        .expect("run queuelet-operator");
    assert!(
        output.status.success(),
        "queuelet-operator refuses the chart's arguments {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn assert_operator_pod_basics(objects: &[Value]) {
    let deployment = one(objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = operator_container(objects);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["runAsUser"], 65532);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        container["ports"],
        json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http"})
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "http"})
    );
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let env = container["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(env["valueFrom"]["fieldRef"]["fieldPath"], field);
    }
    assert!(args(objects).contains(&"--http-addr=0.0.0.0:8080"));
    assert_eq!(
        pod["serviceAccountName"],
        one(objects, "ServiceAccount")["metadata"]["name"]
    );

    let service = one(objects, "Service");
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}])
    );
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_object().expect("a selector") {
        assert_eq!(
            &pod_labels[key], value,
            "the metrics Service selects the pods by {key}"
        );
    }
}

/// Every binding grants its role to the operator's ServiceAccount.
fn assert_bindings_name_the_service_account(objects: &[Value]) {
    let account = one(objects, "ServiceAccount");
    for binding in of_kind(objects, "RoleBinding")
        .into_iter()
        .chain(of_kind(objects, "ClusterRoleBinding"))
    {
        assert_eq!(
            binding["subjects"],
            json!([{
                "kind": "ServiceAccount",
                "name": account["metadata"]["name"],
                "namespace": NAMESPACE,
            }]),
            "{binding}"
        );
        let role = binding["roleRef"]["name"].as_str().unwrap();
        let kind = binding["roleRef"]["kind"].as_str().unwrap();
        let namespace = &binding["metadata"]["namespace"];
        assert!(
            objects.iter().any(|o| o["kind"] == kind
                && o["metadata"]["name"] == role
                && &o["metadata"]["namespace"] == namespace),
            "{kind} {role} bound in {namespace} is not rendered"
        );
    }
}

#[test]
fn chart_version_and_app_version_are_the_workspace_version() {
    let chart = yaml(&chart_dir().join("Chart.yaml"));
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["name"], "queuelet-operator");
}

#[test]
fn chart_crds_are_the_committed_generated_crd() {
    let committed = read(&manifest_dir().join("../crds/messagequeue.yaml"));
    let chart_crds: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("crds"))
        .expect("the chart's crds/")
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(
        chart_crds,
        vec![chart_dir().join("crds/messagequeue.yaml")],
        "the chart's crds/ holds exactly messagequeue.yaml"
    );
    assert!(
        read(&chart_crds[0]) == committed && committed == queuelet_operator::crd_yaml(),
        "charts/queuelet-operator/crds/messagequeue.yaml differs from crds/messagequeue.yaml; \
         copy it: cp crds/messagequeue.yaml charts/queuelet-operator/crds/"
    );
}

#[test]
fn rules_files_are_plain_lists_of_policy_rules() {
    for name in ["rules.yaml", "leader-rules.yaml"] {
        let text = read(&chart_dir().join("files").join(name));
        assert!(!text.contains("{{"), "files/{name} must not be templated");
        let rules = rules_file(name);
        let rules = rules
            .as_array()
            .unwrap_or_else(|| panic!("files/{name} is a list"));
        assert!(!rules.is_empty());
        for rule in rules {
            let keys: Vec<&str> = rule
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                keys,
                ["apiGroups", "resources", "verbs"],
                "files/{name}: {rule}"
            );
            for verb in rule["verbs"].as_array().unwrap() {
                assert_ne!(verb, "*", "files/{name}: no wildcard verbs");
            }
            for resource in rule["resources"].as_array().unwrap() {
                assert_ne!(resource, "*", "files/{name}: no wildcard resources");
            }
        }
    }
}

#[test]
fn default_values_render_cluster_wide_rbac_and_pass_the_schemas() {
    let test = "default_values_render_cluster_wide_rbac_and_pass_the_schemas";
    let Some(helm) = tools::helm(test) else {
        return;
    };
    let objects = render(&helm, &[]);
    assert_the_operator_accepts_its_args(&objects);
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
            "ServiceAccount"
        ],
        "no leader election Role, no namespaced Roles, no ServiceMonitor by default"
    );
    assert_operator_pod_basics(&objects);
    assert_bindings_name_the_service_account(&objects);
    assert_eq!(
        one(&objects, "ClusterRole")["rules"],
        rules_file("rules.yaml")
    );
    assert_eq!(one(&objects, "Deployment")["spec"]["replicas"], 1);
    let container = operator_container(&objects);
    assert_eq!(container["image"], "queuelet-operator:0.1.0");
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    let args = args(&objects);
    assert!(args.contains(&"--image=queuelet:0.1.0"), "{args:?}");
    assert!(
        !args.iter().any(|a| a.starts_with("--leader-elect")),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--watch-namespaces")),
        "{args:?}"
    );
    validate_built_in(test, "default", &objects);
}

#[test]
fn ci_values_render_objects_that_pass_the_schemas() {
    let test = "ci_values_render_objects_that_pass_the_schemas";
    let Some(helm) = tools::helm(test) else {
        return;
    };
    for file in ci_values_files() {
        let objects = render(&helm, &[&file]);
        assert_operator_pod_basics(&objects);
        assert_the_operator_accepts_its_args(&objects);
        assert_bindings_name_the_service_account(&objects);
        let label = file.file_stem().unwrap().to_string_lossy().into_owned();
        validate_built_in(test, &label, &objects);
    }
}

#[test]
fn watched_namespaces_get_roles_and_two_replicas_elect_a_leader() {
    let test = "watched_namespaces_get_roles_and_two_replicas_elect_a_leader";
    let Some(helm) = tools::helm(test) else {
        return;
    };
    let values = chart_dir().join("ci/namespaced-ha-values.yaml");
    let objects = render(&helm, &[&values]);
    assert!(of_kind(&objects, "ClusterRole").is_empty());
    assert!(of_kind(&objects, "ClusterRoleBinding").is_empty());

    let roles = of_kind(&objects, "Role");
    let rules = rules_file("rules.yaml");
    let leader_rules = rules_file("leader-rules.yaml");
    let mut granted: Vec<(&str, bool)> = roles
        .iter()
        .map(|role| {
            let namespace = role["metadata"]["namespace"].as_str().unwrap();
            let leader = role["rules"] == leader_rules;
            assert!(leader || role["rules"] == rules, "{role}");
            (namespace, leader)
        })
        .collect();
    granted.sort_unstable();
    assert_eq!(
        granted,
        [("media", false), (NAMESPACE, true), ("shop", false)],
        "a Role per watched namespace, and the Lease Role in the release namespace only"
    );
    assert_eq!(of_kind(&objects, "RoleBinding").len(), 3);

    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = operator_container(&objects);
    assert_eq!(
        container["image"],
        "registry.example/queuelet-operator:0.1.0-rc.1"
    );
    let args = args(&objects);
    for expected in [
        "--image=registry.example/queuelet:0.1.0-rc.1",
        "--watch-namespaces=shop,media",
        "--leader-elect",
        "--lease-name=queuelet-operator-lease",
        "--cluster-domain=cluster.example",
        "--concurrency=4",
    ] {
        assert!(args.contains(&expected), "{expected} not in {args:?}");
    }
    assert_eq!(
        args.iter().filter(|a| **a == "--log-json").count(),
        1,
        "logJson: false, and --log-json once from extraArgs: {args:?}"
    );

    let monitor = one(&objects, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        monitor["spec"]["endpoints"],
        json!([{"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}])
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"],
        json!({"matchNames": [NAMESPACE]})
    );
    let service_labels = &one(&objects, "Service")["metadata"]["labels"];
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service_labels[key], value,
            "the ServiceMonitor selects the Service by {key}"
        );
    }
}

#[test]
fn one_replica_elects_a_leader_only_when_asked() {
    let test = "one_replica_elects_a_leader_only_when_asked";
    let Some(helm) = tools::helm(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, "leaderElection: {always: true}\n").unwrap();
    let objects = render(&helm, &[&values]);
    assert!(args(&objects).contains(&"--leader-elect"));
    let leader_role = one(&objects, "Role");
    assert_eq!(leader_role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(leader_role["rules"], rules_file("leader-rules.yaml"));
}

#[test]
fn helm_lint_strict_passes_with_every_values_file() {
    let Some(helm) = tools::helm("helm_lint_strict_passes_with_every_values_file") else {
        return;
    };
    let chart = chart_dir();
    let mut runs = vec![vec!["lint", "--strict", chart.to_str().unwrap()]];
    let files = ci_values_files();
    for file in &files {
        runs.push(vec![
            "lint",
            "--strict",
            chart.to_str().unwrap(),
            "--values",
            file.to_str().unwrap(),
        ]);
    }
    for args in runs {
        let output = tools::run_helm(&helm, &args);
        assert!(
            output.status.success(),
            "helm {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_values_schema_refuses_bad_values() {
    let Some(helm) = tools::helm("the_values_schema_refuses_bad_values") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let chart = chart_dir();
    let cases = [
        ("replicas: two", "replicas"),
        ("replicas: 0", "replicas"),
        ("replica: 2", "replica"),
        (
            "image: {repository: queuelet-operator, pullPolicy: Sometimes}",
            "pullPolicy",
        ),
        ("watchNamespaces: shop", "watchNamespaces"),
        ("watchNamespaces: [Shop_Floor]", "watchNamespaces"),
        ("serviceMonitor: {enabled: yes-please}", "enabled"),
        ("serviceMonitor: {enable: true}", "enable"),
        ("leaderElection: {always: true, leaseName: ''}", "leaseName"),
    ];
    for (i, (values, key)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&file, values).unwrap();
        for command in ["template", "lint"] {
            let mut args = vec![command];
            if command == "template" {
                args.push(RELEASE);
            }
            args.extend([chart.to_str().unwrap(), "--values", file.to_str().unwrap()]);
            let output = tools::run_helm(&helm, &args);
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(
                !output.status.success(),
                "helm {command} accepted {values:?}:\n{said}"
            );
            assert!(
                said.contains("schema") && said.contains(key),
                "helm {command} refused {values:?} without naming {key} in the schema:\n{said}"
            );
        }
    }
}
