//! Every answer carries `X-Request-ID` (echoed or new) and CORS headers;
//! pre-flight `OPTIONS` requests are answered, so browsers can call the API.
//! A failure of the server's own is logged here with the request id, and
//! the caller gets only a generic message with that id.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{Failure, InternalFailure};

const ALLOW_HEADERS: &str = "authorization, content-type, x-request-id, x-amebo-admin-key, x-tidings-admin-key, x-amebo-application, x-amebo-signature, x-amebo-timestamp, traceparent";
const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";

/// Adds the request id and CORS headers; answers pre-flight requests.
pub async fn common_headers(mut request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get("x-request-id")
        .filter(|v| v.len() <= 128)
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&tidings_hub::ids::request_id())
                .unwrap_or(HeaderValue::from_static("-"))
        });
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    if let Ok(id) = request_id.to_str() {
        request
            .extensions_mut()
            .insert(crate::audit::RequestId(id.to_owned()));
    }
    let mut response = if request.method() == Method::OPTIONS {
        (StatusCode::NO_CONTENT, Body::empty()).into_response()
    } else {
        next.run(request).await
    };
    if let Some(InternalFailure { detail, kind }) =
        response.extensions_mut().remove::<InternalFailure>()
    {
        let id = request_id.to_str().unwrap_or("-");
        tracing::error!(request_id = id, %method, path, error = %detail, "request failed");
        // A read changes nothing: its outcome is never in doubt.
        let kind = match kind {
            Failure::OutcomeUnknown if method == Method::GET => Failure::Unavailable,
            kind => kind,
        };
        let body = axum::Json(kind.body(Some(id)));
        response = (response.status(), body).into_response();
    }
    let headers = response.headers_mut();
    headers.insert("x-request-id", request_id);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    response
}
