//! [`Call`]: what every API handler takes — the caller, the headers, the
//! query, the body (read once with a size limit) and the server's state.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tidings_hub::json::Reading;
use tidings_hub::time::{now_ms, parse_time, timeline_start};
use tidings_hub::{Page, Principal};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// One API request.
pub struct Call {
    /// Who is calling, if anyone.
    pub principal: Option<Principal>,
    /// What the caller authenticated with.
    pub credential: Option<crate::auth::Credential>,
    /// The request headers.
    pub headers: HeaderMap,
    /// The query string's parameters (the last of repeated ones).
    pub query: HashMap<String, String>,
    /// The caller's address.
    pub peer: Option<SocketAddr>,
    /// The server it came to.
    pub state: AppState,
    body: Bytes,
}

impl Call {
    /// The size of the body, bytes.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// The caller, or 401.
    pub fn who(&self) -> ApiResult<&Principal> {
        self.principal.as_ref().ok_or_else(|| {
            if self.state.auth.admin_key.is_none() && crate::auth::forwarded(&self.headers) {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "This server has no admin key, so only callers on its own host that reach it \
                     directly are admin; this request came through a proxy (it carries a \
                     forwarding header). Start the server with an admin key (--admin-key) \
                     and send it, or an application's credentials.",
                )
            } else {
                ApiError::unauthenticated()
            }
        })
    }

    /// The body as a JSON object, deserialized into `T`. The content type
    /// must be JSON, or absent or curl's default form type with a body that
    /// is JSON (so `curl -d '{...}'` works as in Amebo's documentation):
    /// anything else is 415. Malformed JSON, a non-object or a missing field is 400.
    pub fn json<T: DeserializeOwned>(&self) -> ApiResult<T> {
        let content_type = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let declared_json = essence == "application/json" || essence.ends_with("+json");
        let curl_default = essence.is_empty() || essence == "application/x-www-form-urlencoded";
        if !declared_json {
            let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&self.body).is_ok();
            if !(curl_default && is_json) {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "the body must be JSON (content-type: application/json)",
                ));
            }
        }
        self.check_object()?;
        serde_json::from_slice(&self.body).map_err(|e| ApiError::bad_request(field_error(&e)))
    }

    /// The body as a JSON object whatever its content type (`{}` if empty).
    pub fn lenient_json(&self) -> ApiResult<Value> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Default::default()));
        }
        self.check_object()?;
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
    }

    /// Checks, in one pass, that the body is a JSON object with no key
    /// twice in any object: what is checked must be what is kept and sent,
    /// and a key given twice would be read one way here and maybe another
    /// by a receiver.
    fn check_object(&self) -> ApiResult<()> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "the body must be a JSON object; it is empty",
            ));
        }
        let text = std::str::from_utf8(&self.body)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
        match tidings_hub::json::read(text) {
            Reading::Object => Ok(()),
            Reading::NotObject => Err(ApiError::bad_request("the body must be a JSON object")),
            Reading::Duplicate(key) => Err(ApiError::bad_request(format!(
                "the key {key:?} appears twice in one object of the body"
            ))),
            Reading::Malformed(e) => Err(ApiError::bad_request(format!("malformed JSON: {e}"))),
        }
    }

    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A header's text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// serde's message, with the field name first as Amebo does (`deduper - Field required`).
fn field_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    if let Some(rest) = text.strip_prefix("missing field `")
        && let Some(field) = rest.strip_suffix('`')
    {
        return format!("{field} - Field required");
    }
    text.to_owned()
}

fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

impl FromRequest<AppState> for Call {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let query = parse_query(req.uri().query());
        let (parts, body) = req.into_parts();
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body exceeds the limit of {} bytes", state.body_limit),
            )
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > state.body_limit) {
            return Err(too_large());
        }
        let body = tokio::time::timeout(
            state.body_timeout,
            axum::body::to_bytes(body, state.body_limit),
        )
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s",
                    state.body_timeout.as_secs_f64()
                ),
            )
        })?
        .map_err(|_| too_large())?;
        let presented = crate::auth::Presented {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            body: &body,
            peer,
        };
        let (principal, credential) =
            crate::auth::principal(&state.hub, &state.auth, &state.signatures, &presented).unzip();
        if let Some(slot) = parts.extensions.get::<crate::audit::AuditSlot>() {
            let admin_key_given = crate::auth::admin_key_given(&parts.headers);
            slot.set(
                principal.as_ref(),
                credential,
                admin_key_given && principal.is_none(),
                crate::auth::client_address(&state.auth, &parts.headers, peer),
            );
        }
        Ok(Self {
            principal,
            credential,
            headers: parts.headers,
            query,
            peer,
            state: state.clone(),
            body,
        })
    }
}

/// Parameters and roles most routes ask for.
impl Call {
    /// The admin, or 401/403.
    pub fn admin(&self) -> ApiResult<&Principal> {
        let who = self.who()?;
        if who.is_admin() {
            Ok(who)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Only a superadmin can do this",
            ))
        }
    }

    /// An integer query parameter.
    pub fn int_param(&self, name: &str) -> ApiResult<Option<i64>> {
        self.param(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::bad_request(format!("{name} - must be an integer")))
            })
            .transpose()
    }

    /// A boolean query parameter (`1`/`true`/`yes`, `0`/`false`/`no`).
    pub fn bool_param(&self, name: &str) -> ApiResult<Option<bool>> {
        self.param(name)
            .map(|v| match v {
                "1" | "true" | "yes" => Ok(true),
                "0" | "false" | "no" => Ok(false),
                _ => Err(ApiError::bad_request(format!(
                    "{name} - must be true or false"
                ))),
            })
            .transpose()
    }

    /// `page` and `pagination`.
    pub fn page(&self) -> ApiResult<Page> {
        Ok(Page::new(
            self.int_param("page")?,
            self.int_param("pagination")?,
        ))
    }

    /// A time range from `from`/`to` (ISO 8601 or Unix seconds) and Amebo's
    /// `timeline`/`window` keywords.
    pub fn time_range(&self) -> ApiResult<(Option<u64>, Option<u64>)> {
        let at = |name: &str| -> ApiResult<Option<u64>> {
            self.param(name)
                .map(|v| {
                    parse_time(v).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "{name} - expected an ISO 8601 time (e.g. 2026-11-22T10:00:00Z) or Unix seconds"
                        ))
                    })
                })
                .transpose()
        };
        let mut from = at("from")?;
        let to = at("to")?;
        if let Some(keyword) = self.param("timeline").or_else(|| self.param("window")) {
            let start = timeline_start(keyword, now_ms()).ok_or_else(|| {
                ApiError::bad_request("timeline - one of today, 7d, week, 30d, month, all")
            })?;
            from = Some(from.map_or(start, |f| f.max(start)));
        }
        Ok((from, to))
    }
}

/// A path parameter, like axum's `Path`, whose rejection (a segment that
/// does not decode, such as `%ff`) is the JSON error body, 400.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::bad_request(format!(
                "path - {}",
                rejection.body_text()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("a=1&b=x%20y&c=1+2&d&e=%zz&f=%41&g=%C3%A9"));
        assert_eq!(q["a"], "1");
        assert_eq!(q["b"], "x y");
        assert_eq!(q["c"], "1 2");
        assert_eq!(q["d"], "");
        assert_eq!(q["e"], "%zz");
        assert_eq!(q["f"], "A");
        assert_eq!(q["g"], "é");
    }
}
