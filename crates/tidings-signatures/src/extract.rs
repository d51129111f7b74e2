//! An axum extractor that verifies a delivery over its raw body.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::{Delivery, Rejection, Verifier};

/// A delivery whose signature was verified over the bytes received.
///
/// The handler's state must give an `Arc<Verifier>` (`FromRef`): a request
/// that fails verification is answered 401 with `{"error": ...}` before the
/// handler runs.
///
/// ```
/// use std::sync::Arc;
/// use axum::{Router, routing::post};
/// use tidings_signatures::{Verified, Verifier};
///
/// async fn user_created(Verified(delivery): Verified) -> &'static str {
///     println!("{:?} {}", delivery.event, delivery.body["payload"]);
///     "ok"
/// }
///
/// let verifier = Arc::new(Verifier::new("whsec_a2V5LW9mLTMyLWJ5dGVzLWZvci10aGUtZXhhbXBsZQ==").unwrap());
/// let app: Router = Router::new().route("/hooks/users", post(user_created)).with_state(verifier);
/// ```
#[derive(Debug, Clone)]
pub struct Verified(pub Delivery);

/// Why [`Verified`] refused a request: 401 with the reason, or the body's
/// own rejection (too large, not readable).
#[derive(Debug)]
pub enum VerifiedRejection {
    /// The signature check failed.
    Refused(Rejection),
    /// The body could not be read.
    Body(axum::extract::rejection::BytesRejection),
}

impl IntoResponse for VerifiedRejection {
    fn into_response(self) -> Response {
        match self {
            Self::Refused(why) => (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({ "error": why.to_string() })),
            )
                .into_response(),
            Self::Body(rejection) => rejection.into_response(),
        }
    }
}

impl<S> FromRequest<S> for Verified
where
    S: Send + Sync,
    Arc<Verifier>: FromRef<S>,
{
    type Rejection = VerifiedRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Arc::<Verifier>::from_ref(state);
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, state)
            .await
            .map_err(VerifiedRejection::Body)?;
        verifier
            .verify(&headers, &body)
            .map(Verified)
            .map_err(VerifiedRejection::Refused)
    }
}
