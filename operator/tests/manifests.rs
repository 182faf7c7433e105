//! The manifests the project ships or builds, checked against what the API server
//! accepts: the committed CRD is the generated one, its schema is structural, and every
//! built object passes the official Kubernetes OpenAPI schemas (`kubernetes-validate`).

mod common;

use std::process::Command;

use common::{FIXTURES, fixture, manifest_dir};
use serde_json::Value;

const REGENERATE: &str = "cargo run -q -p queuelet-operator -- crd > crds/messagequeue.yaml";

#[test]
fn committed_crd_matches_the_generated_one() {
    let path = manifest_dir().join("../crds/messagequeue.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = queuelet_operator::crd_yaml();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()))
            + 1;
        panic!(
            "crds/messagequeue.yaml differs from the CRD the code generates (first difference \
             at line {line}); regenerate it from the workspace root with:\n    {REGENERATE}"
        );
    }
}

#[test]
fn crd_yaml_reads_back_as_the_crd() {
    let parsed: Value = serde_saphyr::from_str(&queuelet_operator::crd_yaml()).unwrap();
    let crd = serde_json::to_value(
        <queuelet_operator::resource::MessageQueue as kube::CustomResourceExt>::crd(),
    )
    .unwrap();
    assert_eq!(parsed, crd);
}

fn crd_schema() -> Value {
    let crd = serde_json::to_value(
        <queuelet_operator::resource::MessageQueue as kube::CustomResourceExt>::crd(),
    )
    .unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn crd_schema_is_structural() {
    let mut violations = Vec::new();
    structural::check_root(&crd_schema(), &mut violations);
    assert!(
        violations.is_empty(),
        "not a structural schema:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_structural_checker_catches_what_the_api_server_refuses() {
    use serde_json::json;
    let cases = [
        (
            json!({"type": "object", "properties": {"a": {}}}),
            "has no type",
        ),
        (
            json!({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "object"}]}}}),
            "has no type",
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "object", "anyOf": [{"type": "object", "properties": {"b": {"type": "string"}}}]}}}),
            "inside anyOf",
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "array", "items": [{"type": "string"}]}}}),
            "items must be one schema",
        ),
        (
            json!({"type": "object", "properties": {"a": {"$ref": "#/x"}}}),
            "$ref",
        ),
        (
            json!({"type": "object", "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}}),
            "metadata",
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}}}}),
            "both properties and additionalProperties",
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}}}),
            "list-type map",
        ),
    ];
    for (schema, expected) in cases {
        let mut violations = Vec::new();
        structural::check_root(&schema, &mut violations);
        assert!(
            violations.iter().any(|v| v.contains(expected)),
            "{schema}: expected a violation containing {expected:?}, got {violations:?}"
        );
    }
    let mut violations = Vec::new();
    structural::check_root(
        &json!({"type": "object", "properties": {"q": {"x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string"}]}}}),
        &mut violations,
    );
    assert_eq!(violations, Vec::<String>::new());
}

/// The rules of "Specifying a structural schema" (Kubernetes documentation, CustomResource
/// Definitions), plus the JSONSchemaProps restrictions of apiextensions.k8s.io/v1.
mod structural {
    use serde_json::{Map, Value};

    const TYPES: [&str; 6] = ["object", "array", "string", "integer", "number", "boolean"];
    const JUNCTORS: [&str; 4] = ["allOf", "anyOf", "oneOf", "not"];
    /// Keys apiextensions.k8s.io/v1 refuses anywhere in a schema.
    const FORBIDDEN: [&str; 7] = [
        "$ref",
        "$schema",
        "definitions",
        "$defs",
        "dependencies",
        "patternProperties",
        "additionalItems",
    ];
    /// Keys that must not appear inside a logical junctor.
    const NOT_IN_JUNCTORS: [&str; 5] = [
        "description",
        "type",
        "default",
        "additionalProperties",
        "nullable",
    ];

    pub fn check_root(schema: &Value, violations: &mut Vec<String>) {
        check(schema, "", violations);
        if let Some(metadata) = schema.pointer("/properties/metadata") {
            check_metadata(metadata, violations);
        }
    }

    fn obj<'a>(
        schema: &'a Value,
        path: &str,
        violations: &mut Vec<String>,
    ) -> Option<&'a Map<String, Value>> {
        let map = schema.as_object();
        if map.is_none() {
            violations.push(format!(
                "{path}: a schema must be an object, found {schema}"
            ));
        }
        map
    }

    /// A node that specifies a field or an array item: it must be typed, unless it is
    /// int-or-string or keeps unknown fields.
    fn check(schema: &Value, path: &str, violations: &mut Vec<String>) {
        let Some(map) = obj(schema, path, violations) else {
            return;
        };
        let int_or_string = map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        match map.get("type").and_then(Value::as_str) {
            Some(t) if TYPES.contains(&t) => {}
            Some(t) => violations.push(format!("{path}: unknown type {t:?}")),
            None if int_or_string || preserve => {}
            None => violations.push(format!("{path}: has no type")),
        }
        if let Some(v) = map.get("x-kubernetes-preserve-unknown-fields")
            && v != &Value::Bool(true)
        {
            violations.push(format!(
                "{path}: x-kubernetes-preserve-unknown-fields must be true"
            ));
        }
        for key in FORBIDDEN {
            if map.contains_key(key) {
                violations.push(format!("{path}: {key} is not allowed in a CRD schema"));
            }
        }
        if map.get("uniqueItems") == Some(&Value::Bool(true)) {
            violations.push(format!("{path}: uniqueItems: true is not allowed"));
        }
        if map.contains_key("properties") && map.contains_key("additionalProperties") {
            violations.push(format!("{path}: both properties and additionalProperties"));
        }
        if map.get("additionalProperties") == Some(&Value::Bool(false)) {
            violations.push(format!(
                "{path}: additionalProperties: false is not allowed"
            ));
        }
        if let Some(props) = map.get("properties") {
            match props.as_object() {
                Some(props) => {
                    for (name, child) in props {
                        check(child, &format!("{path}.{name}"), violations);
                    }
                }
                None => violations.push(format!("{path}: properties must be a map")),
            }
        }
        if let Some(additional) = map.get("additionalProperties")
            && additional.is_object()
        {
            check(additional, &format!("{path}[*]"), violations);
        }
        match map.get("items") {
            Some(items) if items.is_object() => check(items, &format!("{path}[]"), violations),
            Some(_) => violations.push(format!("{path}: items must be one schema")),
            None if map.get("type") == Some(&Value::from("array")) => {
                violations.push(format!("{path}: an array needs items"))
            }
            None => {}
        }
        check_list_type(map, path, violations);
        for junctor in JUNCTORS {
            if let Some(branches) = map.get(junctor) {
                let branches: Vec<&Value> = match branches {
                    Value::Array(list) => list.iter().collect(),
                    other => vec![other],
                };
                for branch in branches {
                    check_junctor_branch(
                        branch,
                        map,
                        int_or_string,
                        &format!("{path}.{junctor}"),
                        violations,
                    );
                }
            }
        }
    }

    /// Inside allOf/anyOf/oneOf/not: no type, description, default, nullable or
    /// additionalProperties, and every field or item it mentions is also specified
    /// outside (except the int-or-string pattern `anyOf: [{type: integer}, {type: string}]`).
    fn check_junctor_branch(
        branch: &Value,
        outside: &Map<String, Value>,
        int_or_string: bool,
        path: &str,
        violations: &mut Vec<String>,
    ) {
        let Some(map) = obj(branch, path, violations) else {
            return;
        };
        let allowed_type = int_or_string
            && map.len() == 1
            && matches!(
                map.get("type").and_then(Value::as_str),
                Some("integer" | "string")
            );
        if !allowed_type {
            for key in NOT_IN_JUNCTORS {
                if map.contains_key(key) {
                    violations.push(format!("{path}: {key} inside anyOf/allOf/oneOf/not"));
                }
            }
        }
        if let Some(props) = map.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                let specified = outside
                    .get("properties")
                    .and_then(|p| p.get(name))
                    .is_some();
                if !specified {
                    violations.push(format!(
                        "{path}: field {name} inside anyOf/allOf/oneOf/not is not specified outside"
                    ));
                }
                check_junctor_branch(
                    child,
                    &Map::new(),
                    false,
                    &format!("{path}.{name}"),
                    violations,
                );
            }
        }
        if let Some(items) = map.get("items") {
            if !outside.contains_key("items") {
                violations.push(format!(
                    "{path}: items inside anyOf/allOf/oneOf/not is not specified outside"
                ));
            }
            check_junctor_branch(items, &Map::new(), false, &format!("{path}[]"), violations);
        }
    }

    /// `x-kubernetes-list-type: map` needs object items whose keys are required (or
    /// defaulted) scalars.
    fn check_list_type(map: &Map<String, Value>, path: &str, violations: &mut Vec<String>) {
        let Some(list_type) = map.get("x-kubernetes-list-type").and_then(Value::as_str) else {
            return;
        };
        if !["atomic", "set", "map"].contains(&list_type) {
            violations.push(format!(
                "{path}: unknown x-kubernetes-list-type {list_type}"
            ));
        }
        if list_type != "map" {
            return;
        }
        let items = map.get("items");
        let item_type = items.and_then(|i| i.get("type")).and_then(Value::as_str);
        if item_type != Some("object") {
            violations.push(format!(
                "{path}: x-kubernetes-list-type map needs object items"
            ));
            return;
        }
        let items = items.unwrap();
        let keys = map
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array);
        let Some(keys) = keys.filter(|k| !k.is_empty()) else {
            violations.push(format!(
                "{path}: x-kubernetes-list-type map needs x-kubernetes-list-map-keys"
            ));
            return;
        };
        let required: Vec<&str> = items
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for key in keys.iter().filter_map(Value::as_str) {
            let Some(field) = items.pointer(&format!("/properties/{key}")) else {
                violations.push(format!(
                    "{path}: list map key {key} is not a field of the items"
                ));
                continue;
            };
            if !required.contains(&key) && field.get("default").is_none() {
                violations.push(format!(
                    "{path}: list map key {key} must be required or defaulted"
                ));
            }
            let scalar = matches!(
                field.get("type").and_then(Value::as_str),
                Some("string" | "integer" | "number" | "boolean")
            );
            if !scalar {
                violations.push(format!("{path}: list map key {key} must be a scalar"));
            }
        }
    }

    /// At the root, `metadata` may only restrict `name` and `generateName`.
    fn check_metadata(metadata: &Value, violations: &mut Vec<String>) {
        if let Some(props) = metadata.get("properties").and_then(Value::as_object) {
            for name in props.keys() {
                if name != "name" && name != "generateName" {
                    violations.push(format!(
                        ".metadata: only name and generateName may be specified, not {name}"
                    ));
                }
            }
        }
        if metadata.get("type").and_then(Value::as_str) != Some("object") {
            violations.push(".metadata: must be of type object".into());
        }
    }
}

#[test]
fn every_manifest_passes_the_kubernetes_openapi_schemas() {
    let validated = common::validate_built(
        "every_manifest_passes_the_kubernetes_openapi_schemas",
        vec![manifest_dir().join("../crds/messagequeue.yaml")],
        FIXTURES.map(|name| (name, fixture(name))),
    );
    if let Some(files) = validated {
        assert!(files > 25, "{files} files");
    }
}

#[test]
fn fixtures_pass_the_crd_validation_rules() {
    for name in FIXTURES {
        let mq = fixture(name);
        if let Err(errors) = mq.validate_cel() {
            panic!("tests/fixtures/{name}.yaml breaks the CRD's rules:\n{errors}");
        }
    }
}

#[test]
fn crd_subcommand_prints_the_crd() {
    let output = Command::new(env!("CARGO_BIN_EXE_queuelet-operator"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        queuelet_operator::crd_yaml()
    );
}

#[test]
fn without_a_cluster_the_controller_exits_with_a_clear_error() {
    let bin = env!("CARGO_BIN_EXE_queuelet-operator");
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(bin)
        .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("the controller stopped"), "{stderr}");
    let version = Command::new(bin).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8(version.stdout).unwrap().trim(),
        concat!("queuelet-operator ", env!("CARGO_PKG_VERSION"))
    );
}
