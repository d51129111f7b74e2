//! An example payload made from a JSON Schema: what the "try publish" form
//! starts from. It follows `examples`, `default`, `const` and `enum` where
//! the schema gives them, the types and formats otherwise, fills required
//! properties (all of them when none are listed), and meets simple bounds.

use serde_json::{Map, Value, json};

/// How deep nested schemas are followed (a recursive `$ref` stops here).
const DEPTH: usize = 8;

/// An example value the schema describes (a best effort: `null` where
/// nothing can be told).
pub fn example(schema: &Value) -> Value {
    of(schema, schema, 0)
}

fn of(schema: &Value, root: &Value, depth: usize) -> Value {
    if depth > DEPTH {
        return Value::Null;
    }
    let Some(map) = schema.as_object() else {
        // `true` (anything) or `false` (nothing): an empty object reads best.
        return json!({});
    };
    if let Some(target) = map.get("$ref").and_then(Value::as_str) {
        return match resolve(root, target) {
            Some(resolved) => of(resolved, root, depth + 1),
            None => Value::Null,
        };
    }
    if let Some(first) = map
        .get("examples")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for given in ["const", "default"] {
        if let Some(value) = map.get(given) {
            return value.clone();
        }
    }
    if let Some(first) = map
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for choice in ["oneOf", "anyOf"] {
        if let Some(first) = map
            .get(choice)
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        {
            return of(first, root, depth + 1);
        }
    }
    if let Some(all) = map.get("allOf").and_then(Value::as_array) {
        let mut merged = Map::new();
        for part in all {
            if let Value::Object(fields) = of(part, root, depth + 1) {
                merged.extend(fields);
            }
        }
        return Value::Object(merged);
    }
    let kind = match map.get("type") {
        Some(Value::String(t)) => t.as_str(),
        // Several types: the first that is not null.
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if map.contains_key("properties") => "object",
        _ if map.contains_key("items") => "array",
        _ => "object",
    };
    match kind {
        "object" => object(map, root, depth),
        "array" => {
            let item = map
                .get("items")
                .map_or(Value::Null, |i| of(i, root, depth + 1));
            let least = map
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .clamp(1, 3);
            Value::Array(vec![item; least as usize])
        }
        "string" => string(map),
        "integer" => json!(number(map).round() as i64),
        "number" => json!(number(map)),
        "boolean" => json!(true),
        _ => Value::Null,
    }
}

fn object(map: &Map<String, Value>, root: &Value, depth: usize) -> Value {
    let properties = map.get("properties").and_then(Value::as_object);
    let required: Vec<&str> = map
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = Map::new();
    if let Some(properties) = properties {
        for (name, schema) in properties {
            if required.is_empty() || required.contains(&name.as_str()) {
                out.insert(name.clone(), of(schema, root, depth + 1));
            }
        }
    }
    // Required but not described: something to replace.
    for name in required {
        out.entry(name.to_owned()).or_insert_with(|| json!("value"));
    }
    Value::Object(out)
}

fn string(map: &Map<String, Value>) -> Value {
    let text = match map.get("format").and_then(Value::as_str) {
        Some("date-time") => "2026-01-01T12:00:00Z".to_owned(),
        Some("date") => "2026-01-01".to_owned(),
        Some("time") => "12:00:00Z".to_owned(),
        Some("email") => "someone@example.com".to_owned(),
        Some("uri" | "url" | "iri") => "https://example.com/".to_owned(),
        Some("uuid") => "3f2c1f0e-8a3b-4c5d-9e6f-7a8b9c0d1e2f".to_owned(),
        Some("ipv4") => "192.0.2.1".to_owned(),
        Some("ipv6") => "2001:db8::1".to_owned(),
        Some("hostname") => "example.com".to_owned(),
        _ => "text".to_owned(),
    };
    let least = map.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    let most = map
        .get("maxLength")
        .and_then(Value::as_u64)
        .map(|m| m as usize);
    let mut text = text;
    while text.chars().count() < least {
        text.push('x');
    }
    if let Some(most) = most {
        text = text.chars().take(most).collect();
    }
    Value::String(text)
}

fn number(map: &Map<String, Value>) -> f64 {
    let min = map.get("minimum").and_then(Value::as_f64).or_else(|| {
        map.get("exclusiveMinimum")
            .and_then(Value::as_f64)
            .map(|m| m + 1.0)
    });
    let max = map.get("maximum").and_then(Value::as_f64).or_else(|| {
        map.get("exclusiveMaximum")
            .and_then(Value::as_f64)
            .map(|m| m - 1.0)
    });
    match (min, max) {
        (Some(min), _) => min.max(1.0).min(max.unwrap_or(f64::MAX)),
        (None, Some(max)) => max.min(1.0),
        (None, None) => 1.0,
    }
}

/// A local reference (`#/definitions/x`, `#/$defs/x`).
fn resolve<'a>(root: &'a Value, target: &str) -> Option<&'a Value> {
    let pointer = target.strip_prefix('#')?;
    root.pointer(pointer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_example_meets_its_schema() {
        let schema = json!({
            "type": "object",
            "required": ["id", "email", "items", "total"],
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "email": {"type": "string", "format": "email"},
                "items": {"type": "array", "minItems": 2, "items": {"$ref": "#/$defs/item"}},
                "total": {"type": "number", "minimum": 5},
                "note": {"type": "string"},
                "status": {"enum": ["new", "paid"]}
            },
            "$defs": {"item": {"type": "object", "properties": {"sku": {"type": "string", "minLength": 6}, "qty": {"type": "integer", "maximum": 0}}}}
        });
        let made = example(&schema);
        assert_eq!(made["email"], "someone@example.com");
        assert_eq!(made["total"], 5.0);
        assert_eq!(made["items"].as_array().map(Vec::len), Some(2));
        assert_eq!(made["items"][0]["sku"], "textxx");
        assert_eq!(made["items"][0]["qty"], 0);
        assert!(made.get("note").is_none(), "only what is required");
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        assert!(validator.is_valid(&made), "{made}");
    }

    #[test]
    fn recursion_and_odd_schemas_end() {
        let schema = json!({"$ref": "#", "type": "object"});
        let _ = example(&schema);
        assert_eq!(example(&json!(true)), json!({}));
        assert_eq!(example(&json!({"type": ["null", "integer"]})), json!(1));
        assert_eq!(example(&json!({"examples": [{"a": 1}]})), json!({"a": 1}));
    }
}
