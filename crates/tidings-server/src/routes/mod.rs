//! The routes, one module per resource.

mod actions;
mod applications;
mod audit;
mod docs;
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

/// The route table, once: each documented route with its handlers makes
/// both the router and the OpenAPI document (from the handlers' own
/// `utoipa::path` annotations); aliases are routed, not documented again.
macro_rules! api {
    (
        documented { $($path:literal => $first:ident($fh:path) $(.$method:ident($h:path))*;)* }
        aliases { $($alias:literal => $amethod:ident($ah:path);)* }
    ) => {
        /// The API, described from the handlers' own annotations.
        #[derive(utoipa::OpenApi)]
        #[openapi(
            info(
                title = "Tidings event hub and queues",
                description = "Applications, schema-checked actions, events, subscriptions and signed webhook delivery; durable queues (`/v1/queues`: consumer groups, long-poll receive, acks, dead letters, transactions); compatible with Amebo 0.9.6 clients (docs/amebo-compatibility.md). Credentials: `x-amebo-admin-key`, `Authorization: Bearer <API key or session>`, request signatures (`x-amebo-application` + `x-amebo-signature`), or the `Authentication` cookie; without an admin key the server runs in protected mode (loopback only)."
            ),
            paths($($fh, $($h,)*)*),
            components(schemas(crate::error::ErrorBody)),
            modifiers(&CommonAnswers)
        )]
        pub struct ApiDoc;

        /// The documented routes: each path with its methods.
        #[cfg(test)]
        const DOCUMENTED: &[(&str, &[&str])] = &[
            $(($path, &[stringify!($first) $(, stringify!($method))*]),)*
        ];

        /// The table's routes.
        fn api_routes(router: Router<AppState>) -> Router<AppState> {
            router
                $(.route($path, axum::routing::$first($fh)$(.$method($h))*))*
                $(.route($alias, axum::routing::$amethod($ah)))*
        }
    };
}

api! {
    documented {
        "/health" => get(ops::health);
        "/readyz" => get(ops::ready);
        "/metrics" => get(ops::metrics);
        "/v1/stats" => get(ops::stats);
        "/v1/cluster" => get(ops::cluster);
        "/v1/applications" => get(applications::list).post(applications::create);
        "/v1/applications/{id}" => put(applications::update).patch(applications::toggle).delete(applications::delete);
        "/v1/applications/{id}/secret" => put(applications::rotate_secret);
        "/v1/applications/{id}/apikey" => post(applications::new_api_key);
        "/v1/actions" => get(actions::list).post(actions::register);
        "/v1/actions/{id}" => patch(actions::update).delete(actions::delete);
        "/v1/actions/{id}/validations" => post(actions::validate);
        "/v1/events" => get(events::list).post(events::publish);
        "/v1/events/{id}" => get(events::one);
        "/v1/subscriptions" => get(subscriptions::list).post(subscriptions::subscribe);
        "/v1/subscriptions/{id}" => delete(subscriptions::unsubscribe);
        "/v1/subscriptions/{id}/signing-key" => get(subscriptions::signing_key);
        "/v1/subscriptions/{id}/signing-key/rotate" => post(subscriptions::rotate_signing_key);
        "/v1/tokens" => post(tokens::create);
        "/v1/audit" => get(audit::list);
        "/v1/gists" => get(gists::list);
        "/v1/regists/{id}" => post(gists::replay);
        "/v1/requeues" => post(gists::requeue);
        "/v1/purges" => post(gists::purge);
        "/v1/backfills" => post(gists::backfill);
        "/v1/queues" => get(queues::list).post(queues::create);
        "/v1/queues/{name}" => get(queues::info).delete(queues::delete);
        "/v1/queues/{name}/purge" => post(queues::purge);
        "/v1/queues/{name}/messages" => post(queues::send).get(queues::peek);
        "/v1/queues/{name}/receive" => post(queues::receive);
        "/v1/queues/{name}/ack" => post(queues::ack);
        "/v1/queues/{name}/stream" => get(streams::stream);
        "/v1/queues/{name}/stream/credit" => post(streams::credit);
        "/v1/queues/{name}/nack" => post(queues::nack);
        "/v1/queues/{name}/groups/{group}" => delete(queues::delete_group);
        "/v1/queues/{name}/groups/{group}/pending" => get(queues::pending);
        "/v1/queues/{name}/groups/{group}/consumers/{consumer}" => delete(queues::forget_consumer);
        "/v1/queues/{name}/dead-letters" => get(queues::dead_letters);
        "/v1/queues/{name}/dead-letters/{id}" => get(queues::dead_letter);
        "/v1/queues/{name}/dead-letters/requeue" => post(queues::requeue);
        "/v1/queues/{name}/dead-letters/purge" => post(queues::purge_dead_letters);
        "/v1/transactions" => post(queues::transaction);
        "/v1/tables/{table}/record" => get(queues::record);
        "/v1/tables/{table}/records" => get(queues::records);
    }
    aliases {
        "/healthz" => get(ops::health);
        "/v8/tokens" => post(tokens::create);
        "/openapi.json" => get(openapi_json);
        "/docs" => get(docs_page);
    }
}

/// Answers every route that takes a caller can give besides its own,
/// added to each in the document where its annotation does not say more:
/// 400 (a malformed request or name), 403 (not this caller's to do: another
/// application's, an admin's, or a queue outside its allow-list), 404 where
/// the path names something, 413 (a body over the limit), 415 where the
/// body must be JSON, 503 (a failure of the server's own: a generic
/// message and the request id, or an unknown outcome), and on routes that
/// write, 507 (a full disk) and, outside the queue API, 409 (a catalog
/// record changed through another process at the same moment).
struct CommonAnswers;

impl utoipa::Modify for CommonAnswers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};
        let error = |description: &str| {
            let body = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build();
            ResponseBuilder::new()
                .description(description)
                .content("application/json", body)
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let queue_api = ["/v1/queues", "/v1/transactions", "/v1/tables"]
                .iter()
                .any(|p| path.starts_with(p));
            let names_something = path.contains('{');
            let operations = [
                (false, &mut item.get),
                (true, &mut item.put),
                (true, &mut item.post),
                (true, &mut item.delete),
                (true, &mut item.patch),
            ];
            for (writes, operation) in operations {
                let Some(operation) = operation else {
                    continue;
                };
                // Bodies read whatever their content type are documented
                // as optional (`Option<T>`): only required ones are refused
                // when not JSON.
                let strict_body = matches!(
                    &operation.request_body,
                    Some(RefOr::T(body)) if matches!(body.required, Some(Required::True))
                );
                let answers = &mut operation.responses.responses;
                if !answers.contains_key("401") {
                    continue;
                }
                let mut add = |status: &str, description: &str| {
                    answers
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description).into());
                };
                add("400", "Malformed request");
                if queue_api {
                    add(
                        "403",
                        "Not this application's queue or table, or the storage refuses (`code` `denied`)",
                    );
                } else {
                    add(
                        "403",
                        "Not this caller's to do: another application's, or an admin's",
                    );
                }
                if names_something {
                    add("404", "Not found");
                }
                add("408", "The body did not arrive in time");
                add("413", "The body exceeds the server's limit");
                if strict_body {
                    add("415", "The body is not JSON");
                }
                add(
                    "503",
                    "The server could not complete it (storage, shutdown): `code` `unavailable` and a `request_id`, retry; or `code` `outcome_unknown` with `\"outcome\": \"unknown\"` when the storage took a write but did not confirm it (it may have been applied: retry with the same deduper, dedup id or Idempotency-Key)",
                );
                if writes && !queue_api {
                    // Catalog writes expect the record as this process last
                    // saw it (several processes on one store).
                    add(
                        "409",
                        "A record it changes was changed through another process at the same moment (`code` `record_changed`): nothing was applied; retry",
                    );
                }
                if writes {
                    add(
                        "507",
                        "The storage is full (`code` `storage_full`): nothing was stored; retry once space is freed",
                    );
                }
            }
        }
    }
}

/// Every route of the API.
pub fn router(state: AppState) -> Router {
    api_routes(Router::new())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::record,
        ))
        .merge(crate::console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(<ApiDoc as utoipa::OpenApi>::openapi())
}

/// The document as a page, rendered once by the server (no script, no CDN).
async fn docs_page() -> axum::response::Html<&'static str> {
    static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    axum::response::Html(PAGE.get_or_init(|| {
        let doc = serde_json::to_value(<ApiDoc as utoipa::OpenApi>::openapi()).unwrap_or_default();
        docs::page(&doc)
    }))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

#[cfg(test)]
mod tests {
    use super::{ApiDoc, DOCUMENTED};

    #[test]
    fn routes_that_reach_the_storage_declare_its_failure() {
        let doc = <ApiDoc as utoipa::OpenApi>::openapi();
        let doc = serde_json::to_value(doc).unwrap_or_default();
        let send = &doc["paths"]["/v1/queues/{name}/messages"]["post"]["responses"];
        assert!(
            send.get("503").is_some() && send.get("403").is_some(),
            "{send}"
        );
        let publish = &doc["paths"]["/v1/events"]["post"]["responses"];
        assert!(publish.get("503").is_some(), "{publish}");
    }

    /// The router and the document come from one table; the handlers'
    /// annotations carry their own path and method, which must be the
    /// table's: every route is documented where it is served, and nothing
    /// else is.
    #[test]
    fn the_document_has_exactly_the_routes_served() {
        let doc = <ApiDoc as utoipa::OpenApi>::openapi();
        let doc = serde_json::to_value(doc).unwrap_or_default();
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        let mut documented = 0;
        for (path, methods) in DOCUMENTED {
            for method in *methods {
                assert!(
                    paths.get(*path).and_then(|p| p.get(*method)).is_some(),
                    "{method} {path} is served but documented elsewhere or not at all"
                );
                documented += 1;
            }
        }
        let in_doc: usize = paths
            .values()
            .map(|p| p.as_object().map_or(0, |m| m.len()))
            .sum();
        assert_eq!(
            in_doc, documented,
            "the document has routes the table does not serve"
        );
    }
}
