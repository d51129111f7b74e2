//! `/docs`: the API document rendered as one HTML page by the server, from
//! the same document `/openapi.json` serves: no script, nothing loaded from
//! anywhere else, so it works offline and trusts no third party.

use std::fmt::Write;

use serde_json::Value;

/// Text made safe for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A schema in a few words: a link to a named one, `array of ...`, a type.
fn shape(schema: &Value) -> String {
    if let Some(name) = schema["$ref"].as_str() {
        let name = esc(name.trim_start_matches("#/components/schemas/"));
        return format!("<a href=\"#schema-{name}\">{name}</a>");
    }
    for (combined, joiner) in [("oneOf", " or "), ("anyOf", " or "), ("allOf", " and ")] {
        if let Some(parts) = schema[combined].as_array() {
            return parts.iter().map(shape).collect::<Vec<_>>().join(joiner);
        }
    }
    match &schema["type"] {
        Value::String(t) if t == "array" => format!("array of {}", shape(&schema["items"])),
        Value::String(t) => esc(t),
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .map(esc)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any JSON".to_owned(),
    }
}

/// The page for `doc` (an OpenAPI document as JSON).
pub(super) fn page(doc: &Value) -> String {
    let mut out = String::new();
    let title = esc(doc["info"]["title"].as_str().unwrap_or("API"));
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:60em;margin:auto;padding:1em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}}\
         code{{background:#f4f4f4}}</style></head><body><h1>{title}</h1><p>{}</p>\
         <p>The document itself: <a href=\"/openapi.json\">/openapi.json</a>.</p><h2>Routes</h2>",
        esc(doc["info"]["description"].as_str().unwrap_or_default())
    );
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let _ = write!(
                out,
                "<h3><code>{} {}</code></h3>",
                esc(&method.to_uppercase()),
                esc(path)
            );
            if let Some(text) = op["description"].as_str().or(op["summary"].as_str()) {
                let _ = write!(out, "<p>{}</p>", esc(text));
            }
            if let Some(params) = op["parameters"].as_array() {
                out.push_str("<p>Parameters: ");
                let listed: Vec<String> = params
                    .iter()
                    .map(|p| {
                        format!(
                            "<code>{}</code> ({}{})",
                            esc(p["name"].as_str().unwrap_or_default()),
                            esc(p["in"].as_str().unwrap_or_default()),
                            if p["required"] == true {
                                ", required"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect();
                out.push_str(&listed.join(", "));
                out.push_str("</p>");
            }
            if let Some(body) = op["requestBody"]["content"].as_object() {
                for (kind, media) in body {
                    let _ = write!(
                        out,
                        "<p>Body ({}): {}</p>",
                        esc(kind),
                        shape(&media["schema"])
                    );
                }
            }
            out.push_str("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>");
            for (status, answer) in op["responses"].as_object().into_iter().flatten() {
                let body = answer["content"]
                    .as_object()
                    .and_then(|c| c.values().next())
                    .map(|m| shape(&m["schema"]))
                    .unwrap_or_default();
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{body}</td></tr>",
                    esc(status),
                    esc(answer["description"].as_str().unwrap_or_default())
                );
            }
            out.push_str("</table>");
        }
    }
    out.push_str("<h2>Schemas</h2>");
    for (name, schema) in doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let name = esc(name);
        let _ = write!(out, "<h3 id=\"schema-{name}\">{name}</h3>");
        if let Some(text) = schema["description"].as_str() {
            let _ = write!(out, "<p>{}</p>", esc(text));
        }
        let parts: Vec<&Value> = match schema["allOf"].as_array() {
            Some(parts) => parts.iter().collect(),
            None => vec![schema],
        };
        for part in parts {
            if part.get("$ref").is_some() {
                let _ = write!(out, "<p>With every field of {}.</p>", shape(part));
            }
            let Some(properties) = part["properties"].as_object() else {
                continue;
            };
            let required: Vec<&str> = part["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            out.push_str("<table><tr><th>field</th><th>type</th><th>meaning</th></tr>");
            for (field, property) in properties {
                let _ = write!(
                    out,
                    "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(field),
                    if required.contains(&field.as_str()) {
                        " (always)"
                    } else {
                        ""
                    },
                    shape(property),
                    esc(property["description"].as_str().unwrap_or_default())
                );
            }
            out.push_str("</table>");
        }
    }
    out.push_str("</body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_and_links_schemas() {
        let doc = serde_json::json!({
            "info": {"title": "T<i>", "description": "d"},
            "paths": {"/v1/x": {"get": {"description": "a <b>", "responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/X"}}}}
            }}}},
            "components": {"schemas": {"X": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}}}
        });
        let html = page(&doc);
        assert!(
            html.contains("T&lt;i&gt;") && html.contains("a &lt;b&gt;"),
            "{html}"
        );
        assert!(html.contains("<a href=\"#schema-X\">X</a>"), "{html}");
        assert!(html.contains("id=\"schema-X\""), "{html}");
        assert!(!html.contains("<script"), "{html}");
    }
}
