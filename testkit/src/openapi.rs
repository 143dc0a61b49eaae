//! Checks responses against `docs/openapi.json`, so the document stays the
//! server's real contract: the tests run every answer they get through
//! [`check_response`]. It understands the subset of JSON Schema the document
//! uses: `$ref`, `type` (one or several), `required`, `properties`,
//! `additionalProperties`, `items`, `enum`, `minimum` and `maximum`.

use serde_json::Value;

/// The API's contract, as the server serves it.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// The parsed document.
pub fn document() -> &'static Value {
    // Parsed once: the API fuzz target checks every answer against it.
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| serde_json::from_str(OPENAPI).expect("docs/openapi.json is valid JSON"))
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let ptr = r.trim_start_matches('#');
            doc.pointer(ptr).unwrap_or(&Value::Null)
        }
        None => schema,
    }
}

fn type_ok(v: &Value, t: &str) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

/// Validate `v` against `schema`; errors name the JSON path.
pub fn validate(doc: &Value, schema: &Value, v: &Value, path: &str) -> Result<(), String> {
    let s = resolve(doc, schema);
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(v, t),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| type_ok(v, t)),
            _ => true,
        };
        if !ok {
            return Err(format!("{path}: {v} is not of type {t}"));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return Err(format!("{path}: {v} is not one of {}", Value::Array(e.clone())));
        }
    }
    if let (Some(min), Some(x)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if x < min {
            return Err(format!("{path}: {x} is below the minimum {min}"));
        }
    }
    if let (Some(max), Some(x)) = (s.get("maximum").and_then(Value::as_f64), v.as_f64()) {
        if x > max {
            return Err(format!("{path}: {x} is above the maximum {max}"));
        }
    }
    if let Some(o) = v.as_object() {
        for r in s.get("required").and_then(Value::as_array).into_iter().flatten() {
            let k = r.as_str().unwrap_or_default();
            if !o.contains_key(k) {
                return Err(format!("{path}: required property {k:?} is missing"));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, x) in o {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => validate(doc, ps, x, &format!("{path}.{k}"))?,
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => return Err(format!("{path}: property {k:?} is not documented")),
                    Some(a @ Value::Object(_)) => validate(doc, a, x, &format!("{path}.{k}"))?,
                    _ if props.is_some() => return Err(format!("{path}: property {k:?} is not documented")),
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(a)) = (s.get("items"), v.as_array()) {
        for (i, x) in a.iter().enumerate() {
            validate(doc, items, x, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

/// Check one answer: the status must be documented for the operation, and
/// a JSON body must match the documented schema.
pub fn check_response(method: &str, pattern: &str, status: u16, content_type: &str, body: &str) -> Result<(), String> {
    let doc = document();
    let op = doc
        .get("paths")
        .and_then(|p| p.get(pattern))
        .and_then(|p| p.get(method.to_ascii_lowercase()))
        .ok_or_else(|| format!("{method} {pattern} is not in the OpenAPI document"))?;
    let resp = op
        .get("responses")
        .and_then(|r| r.get(status.to_string()))
        .ok_or_else(|| format!("{method} {pattern}: status {status} is not documented"))?;
    let content = resp.get("content").and_then(Value::as_object).cloned().unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or("").trim();
    let Some(m) = content.get(media) else {
        return Err(format!("{method} {pattern} {status}: content type {media:?} is not documented"));
    };
    if media == "application/json" {
        let v: Value = serde_json::from_str(body).map_err(|e| format!("{method} {pattern}: body is not JSON: {e}"))?;
        if let Some(schema) = m.get("schema") {
            validate(doc, schema, &v, "$").map_err(|e| format!("{method} {pattern} {status}: {e}"))?;
        }
    }
    Ok(())
}
