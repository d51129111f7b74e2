//! The routes, one module per resource.

mod actions;
mod applications;
mod events;
mod gists;
mod ops;
mod queues;
mod streams;
mod subscriptions;
mod tokens;

use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post, put};

/// Every route of the API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(ops::health))
        .route("/healthz", get(ops::health))
        .route("/readyz", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/v1/stats", get(ops::stats))
        .route(
            "/v1/applications",
            get(applications::list).post(applications::create),
        )
        .route(
            "/v1/applications/{id}",
            put(applications::update)
                .patch(applications::toggle)
                .delete(applications::delete),
        )
        .route(
            "/v1/applications/{id}/secret",
            put(applications::rotate_secret),
        )
        .route(
            "/v1/applications/{id}/apikey",
            post(applications::new_api_key),
        )
        .route("/v1/actions", get(actions::list).post(actions::register))
        .route(
            "/v1/actions/{id}",
            axum::routing::patch(actions::update).delete(actions::delete),
        )
        .route("/v1/actions/{id}/validations", post(actions::validate))
        .route("/v1/events", get(events::list).post(events::publish))
        .route("/v1/events/{id}", get(events::one))
        .route(
            "/v1/subscriptions",
            get(subscriptions::list).post(subscriptions::subscribe),
        )
        .route(
            "/v1/subscriptions/{id}",
            axum::routing::delete(subscriptions::unsubscribe),
        )
        .route("/v1/tokens", post(tokens::create))
        .route("/v8/tokens", post(tokens::create))
        .route("/v1/gists", get(gists::list))
        .route("/v1/regists/{id}", post(gists::replay))
        .route("/v1/requeues", post(gists::requeue))
        .route("/v1/backfills", post(gists::backfill))
        .route("/v1/queues", get(queues::list).post(queues::create))
        .route(
            "/v1/queues/{name}",
            get(queues::info).delete(queues::delete),
        )
        .route("/v1/queues/{name}/purge", post(queues::purge))
        .route("/v1/queues/{name}/messages", post(queues::send))
        .route("/v1/queues/{name}/receive", post(queues::receive))
        .route("/v1/queues/{name}/ack", post(queues::ack))
        .route("/v1/queues/{name}/stream", get(streams::stream))
        .route("/v1/queues/{name}/stream/credit", post(streams::credit))
        .route("/v1/queues/{name}/nack", post(queues::nack))
        .route("/v1/queues/{name}/dead-letters", get(queues::dead_letters))
        .route(
            "/v1/queues/{name}/dead-letters/{id}",
            get(queues::dead_letter),
        )
        .route(
            "/v1/queues/{name}/dead-letters/requeue",
            post(queues::requeue),
        )
        .route(
            "/v1/queues/{name}/dead-letters/purge",
            post(queues::purge_dead_letters),
        )
        .route("/v1/transactions", post(queues::transaction))
        .route("/v1/tables/{table}/record", get(queues::record))
        .route("/v1/tables/{table}/records", get(queues::records))
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs_page))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The API, described from the handlers' own annotations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Tidings event hub and queues",
        description = "Applications, schema-checked actions, events, subscriptions and signed webhook delivery; durable queues (`/v1/queues`: consumer groups, long-poll receive, acks, dead letters, transactions); compatible with Amebo 0.9.6 clients (docs/amebo-compatibility.md). Credentials: `x-amebo-admin-key`, `Authorization: Bearer <API key or session>`, request signatures (`x-amebo-application` + `x-amebo-signature`), or the `Authentication` cookie; without an admin key the server runs in protected mode (loopback only)."
    ),
    paths(
        ops::health,
        ops::ready,
        ops::metrics,
        ops::stats,
        applications::create,
        applications::list,
        applications::update,
        applications::toggle,
        applications::delete,
        applications::rotate_secret,
        applications::new_api_key,
        actions::register,
        actions::list,
        actions::update,
        actions::delete,
        actions::validate,
        events::publish,
        events::list,
        events::one,
        subscriptions::subscribe,
        subscriptions::list,
        subscriptions::unsubscribe,
        gists::list,
        gists::replay,
        gists::requeue,
        gists::backfill,
        tokens::create,
        queues::create,
        queues::list,
        queues::info,
        queues::delete,
        queues::purge,
        queues::send,
        queues::receive,
        streams::stream,
        streams::credit,
        queues::ack,
        queues::nack,
        queues::dead_letters,
        queues::dead_letter,
        queues::requeue,
        queues::purge_dead_letters,
        queues::transaction,
        queues::record,
        queues::records,
    ),
    components(schemas(crate::error::ErrorBody))
)]
pub struct ApiDoc;

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(<ApiDoc as utoipa::OpenApi>::openapi())
}

/// A page that renders the document (Redoc, loaded by the browser from its CDN).
async fn docs_page() -> axum::response::Html<&'static str> {
    axum::response::Html(
        r#"<!doctype html><html><head><title>Tidings API</title><meta charset="utf-8"></head>
<body><redoc spec-url="/openapi.json"></redoc>
<script src="https://cdn.redoc.ly/redoc/latest/bundles/redoc.standalone.js"></script>
<noscript>The API description is at <a href="/openapi.json">/openapi.json</a>.</noscript></body></html>"#,
    )
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}
