//! The server's own /openapi.json, held against what it answers: every
//! answer a test client gets must be a status the document declares for
//! that route, with a body its schema accepts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonschema::Validator;
use serde_json::{Value, json};

/// The document, with its compiled answer schemas.
pub struct Spec {
    doc: Value,
    validators: Mutex<HashMap<String, Arc<Validator>>>,
}

impl Spec {
    /// The document as served.
    pub fn new(doc: Value) -> Self {
        Self {
            doc,
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// The documented path that `path` (without its query) is an instance
    /// of: a literal segment beats a `{parameter}`.
    fn template(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.split('/').collect();
        let paths = self.doc["paths"].as_object()?;
        paths
            .keys()
            .filter_map(|template| {
                let parts: Vec<&str> = template.split('/').collect();
                if parts.len() != segments.len() {
                    return None;
                }
                let mut params = 0;
                for (part, segment) in parts.iter().zip(&segments) {
                    if part.starts_with('{') && part.ends_with('}') && !segment.is_empty() {
                        params += 1;
                    } else if part != segment {
                        return None;
                    }
                }
                Some((params, template))
            })
            .min_by_key(|(params, _)| *params)
            .map(|(_, template)| template.clone())
    }

    /// Checks one answer; `Err` says what the document does not declare or
    /// what of the body its schema refuses.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) -> Result<(), String> {
        let path = path.split('?').next().unwrap_or(path);
        // Aliases, served and not documented again.
        let path = match path {
            "/healthz" => "/health",
            "/v8/tokens" => "/v1/tokens",
            "/openapi.json" | "/docs" => return Ok(()),
            other => other,
        };
        if method.eq_ignore_ascii_case("options") {
            // CORS preflights, answered by the CORS layer for every route.
            return Ok(());
        }
        let method = method.to_ascii_lowercase();
        let Some(template) = self.template(path) else {
            // Undocumented paths answer the 404 and 405 fallbacks: the
            // error body, checked below against ErrorBody.
            return self.validate(
                "ErrorBody",
                &json!({"$ref": "#/components/schemas/ErrorBody"}),
                body,
            );
        };
        let Some(operation) = self.doc["paths"][&template].get(&method) else {
            if status == 405 {
                return self.validate(
                    "ErrorBody",
                    &json!({"$ref": "#/components/schemas/ErrorBody"}),
                    body,
                );
            }
            return Err(format!(
                "{method} {template} is not documented, answered {status}"
            ));
        };
        let Some(response) = operation["responses"].get(status.to_string()) else {
            return Err(format!(
                "{method} {template} answered {status}, which the document does not declare: {body}"
            ));
        };
        if status == 204 || body.is_null() {
            return match response.get("content") {
                Some(_) if status != 204 => Err(format!(
                    "{method} {template} {status}: a body is declared, none came"
                )),
                _ => Ok(()),
            };
        }
        let schema = &response["content"]["application/json"]["schema"];
        if schema.is_null() {
            return Err(format!(
                "{method} {template} {status}: no JSON body declared, got {body}"
            ));
        }
        let key = format!("{method} {template} {status}");
        self.validate(&key, schema, body)
    }

    fn validate(&self, key: &str, schema: &Value, body: &Value) -> Result<(), String> {
        let validator = {
            let mut cache = self.validators.lock().map_err(|e| e.to_string())?;
            match cache.get(key) {
                Some(v) => v.clone(),
                None => {
                    let root = json!({
                        "allOf": [schema],
                        "components": self.doc["components"],
                    });
                    let v = Arc::new(jsonschema::options().build(&root).map_err(|e| {
                        format!("{key}: the document's schema does not compile: {e}")
                    })?);
                    cache.insert(key.to_owned(), v.clone());
                    v
                }
            }
        };
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} {e}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{key}: the body does not match the document: {errors:?}\n{body}"
            ))
        }
    }
}
