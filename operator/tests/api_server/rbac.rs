//! The chart's RBAC (`charts/queuelet-operator/files/rules.yaml` and
//! `leader-rules.yaml`) held against the
//! requests the operator makes: the mocked API server refuses any request those rules
//! would not allow, so a new API call without its permission fails the scenario that
//! makes it.

use std::sync::OnceLock;

use http::Method;
use serde_json::Value;

/// One request as RBAC sees it.
#[derive(Debug, PartialEq, Eq)]
pub struct Access {
    pub group: String,
    /// The resource, with `/subresource` when there is one.
    pub resource: String,
    pub verb: &'static str,
}

/// The API group, resource and verb of a request, from its method, path and query.
pub fn access(method: &Method, path: &str, query: &str) -> Access {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("not a Kubernetes API path: {path}"),
    };
    let rest = match rest {
        ["namespaces", _namespace, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, subresource] => (format!("{resource}/{subresource}"), true),
        _ => panic!("unexpected API path {path}"),
    };
    let watch = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let verb = match (method.as_str(), named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => panic!("unexpected method {other} on {path}"),
    };
    Access {
        group: group.into(),
        resource,
        verb,
    }
}

fn rules() -> &'static Vec<Value> {
    static RULES: OnceLock<Vec<Value>> = OnceLock::new();
    // The rules on watched objects, and those of the leader Lease (granted in the
    // operator's own namespace only).
    RULES.get_or_init(|| {
        ["rules.yaml", "leader-rules.yaml"]
            .iter()
            .flat_map(|file| {
                let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../charts/queuelet-operator/files")
                    .join(file);
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                let rules: Vec<Value> = serde_saphyr::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                rules
            })
            .collect()
    })
}

/// True when a rule of the chart's files grants `access`.
pub fn allowed(access: &Access) -> bool {
    let lists = |rule: &Value, key: &str, wanted: &str| {
        rule[key]
            .as_array()
            .is_some_and(|values| values.iter().any(|v| v == wanted))
    };
    rules().iter().any(|rule| {
        lists(rule, "apiGroups", &access.group)
            && lists(rule, "resources", &access.resource)
            && lists(rule, "verbs", access.verb)
    })
}

/// Panics unless the chart grants the request.
pub fn assert_allowed(method: &Method, path: &str, query: &str) {
    let access = access(method, path, query);
    assert!(
        allowed(&access),
        "{method} {path}: the chart's files/rules.yaml does not grant {access:?}"
    );
}

#[test]
fn requests_map_to_their_rbac_verbs() {
    let cases = [
        (
            Method::GET,
            "/apis/apps/v1/namespaces/shop/statefulsets/orders",
            "",
            "apps",
            "statefulsets",
            "get",
        ),
        (
            Method::GET,
            "/apis/queuelet.dev/v1alpha1/messagequeues",
            "watch=true&timeoutSeconds=290",
            "queuelet.dev",
            "messagequeues",
            "watch",
        ),
        (
            Method::GET,
            "/api/v1/namespaces/shop/pods",
            "labelSelector=a%3Db",
            "",
            "pods",
            "list",
        ),
        (
            Method::PATCH,
            "/apis/queuelet.dev/v1alpha1/namespaces/shop/messagequeues/orders/status",
            "",
            "queuelet.dev",
            "messagequeues/status",
            "patch",
        ),
        (
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/shop/events",
            "",
            "events.k8s.io",
            "events",
            "create",
        ),
        (
            Method::DELETE,
            "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/orders",
            "",
            "policy",
            "poddisruptionbudgets",
            "delete",
        ),
    ];
    for (method, path, query, group, resource, verb) in cases {
        assert_eq!(
            access(&method, path, query),
            Access {
                group: group.into(),
                resource: resource.into(),
                verb
            },
            "{method} {path}"
        );
    }
}

#[test]
fn the_chart_grants_no_more_than_the_operator_needs() {
    let refused = [
        (
            Method::DELETE,
            "/api/v1/namespaces/shop/secrets/orders-credentials",
        ),
        (
            Method::PUT,
            "/api/v1/namespaces/shop/configmaps/orders-config",
        ),
        (
            Method::PATCH,
            "/apis/queuelet.dev/v1alpha1/namespaces/shop/messagequeues/orders",
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/shop/persistentvolumeclaims/data-orders-0",
        ),
        (Method::GET, "/api/v1/nodes"),
        (Method::POST, "/api/v1/namespaces/shop/events"),
    ];
    for (method, path) in refused {
        assert!(
            !allowed(&access(&method, path, "")),
            "{method} {path} should not be granted"
        );
    }
    assert!(allowed(&access(
        &Method::GET,
        "/api/v1/secrets",
        "watch=true"
    )));
}
