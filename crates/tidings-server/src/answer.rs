//! What handlers return besides errors: a body with the status that says
//! what happened to it.

use axum::Json;
use axum::http::StatusCode;

/// A body with its status.
pub type Answer<T> = (StatusCode, Json<T>);

/// 201 when `created`; 200 when it was there already (the same action or
/// queue, a reactivated subscription, a repeated deduper).
pub fn created_or_ok<T>(created: bool, body: T) -> Answer<T> {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(body))
}

/// 202: done (Amebo answers its changes so).
pub fn accepted<T>(body: T) -> Answer<T> {
    (StatusCode::ACCEPTED, Json(body))
}
