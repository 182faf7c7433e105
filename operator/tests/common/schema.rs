//! Validation of an object against the CRD's OpenAPI v3 schema, the part the API server
//! applies before the CEL rules: types (and int-or-string), required fields, unknown
//! fields (refused, as `kubectl apply`'s strict field validation does), enums, numeric
//! ranges, string lengths and patterns, list sizes.

use serde_json::{Map, Value};

/// The `openAPIV3Schema` of the generated MessageQueue CRD.
pub fn message_queue_schema() -> Value {
    let crd = serde_json::to_value(
        <queuelet_operator::resource::MessageQueue as kube::CustomResourceExt>::crd(),
    )
    .expect("the CRD serializes");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every violation of `schema` by `value`, each as "path: what is wrong".
pub fn violations(schema: &Value, value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    check(schema, value, "", &mut found);
    found
}

fn check(schema: &Value, value: &Value, path: &str, found: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        return;
    };
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            found.push(format!("{path}: null is not allowed"));
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            found.push(format!(
                "{path}: must be an integer or a string, not {value}"
            ));
        }
        return;
    }
    if let Some(type_) = schema.get("type").and_then(Value::as_str) {
        let matches = match type_ {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !matches {
            found.push(format!("{path}: must be of type {type_}, not {value}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        found.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    check_bounds(schema, value, path, found);
    match value {
        Value::Object(fields) => check_object(schema, fields, path, found),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

fn check_bounds(schema: &Map<String, Value>, value: &Value, path: &str, found: &mut Vec<String>) {
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    if let Some(n) = value.as_f64() {
        if bound("minimum").is_some_and(|min| n < min) {
            found.push(format!(
                "{path}: {n} is below the minimum {}",
                schema["minimum"]
            ));
        }
        if bound("maximum").is_some_and(|max| n > max) {
            found.push(format!(
                "{path}: {n} is above the maximum {}",
                schema["maximum"]
            ));
        }
    }
    let size = match value {
        Value::String(s) => Some((s.chars().count() as f64, "minLength", "maxLength")),
        Value::Array(a) => Some((a.len() as f64, "minItems", "maxItems")),
        _ => None,
    };
    if let Some((len, min, max)) = size
        && (bound(min).is_some_and(|m| len < m) || bound(max).is_some_and(|m| len > m))
    {
        found.push(format!("{path}: length {len} is outside {min}/{max}"));
    }
    if let (Some(pattern), Some(s)) = (
        schema.get("pattern").and_then(Value::as_str),
        value.as_str(),
    ) {
        let regex = regex::Regex::new(pattern).expect("the CRD's patterns compile");
        if !regex.is_match(s) {
            found.push(format!("{path}: {s:?} does not match {pattern}"));
        }
    }
}

fn check_object(
    schema: &Map<String, Value>,
    fields: &Map<String, Value>,
    path: &str,
    found: &mut Vec<String>,
) {
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !fields.contains_key(name) {
            found.push(format!("{path}: {name} is required"));
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    for (name, field) in fields {
        let field_path = format!("{path}.{name}");
        match (properties.and_then(|p| p.get(name)), additional) {
            (Some(field_schema), _) => check(field_schema, field, &field_path, found),
            (None, Some(additional)) if additional.is_object() => {
                check(additional, field, &field_path, found)
            }
            // The API server itself defines a resource's apiVersion, kind and metadata.
            (None, _)
                if path.is_empty()
                    && ["apiVersion", "kind", "metadata"].contains(&name.as_str()) => {}
            (None, _) if preserve || path == ".metadata" || properties.is_none() => {}
            (None, _) => found.push(format!("{field_path}: unknown field")),
        }
    }
}
