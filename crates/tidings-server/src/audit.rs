//! The audit log's HTTP side: after each audited route answers with success,
//! and after every refused admin key, an entry is written with who (the
//! caller the route authenticated), what (the route, named), to what (the
//! path's names), the status, the client's address and the request id.
//!
//! Handlers authenticate inside [`crate::request::Call`]; it leaves the
//! caller in the request's [`AuditSlot`] for this layer to read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tidings_hub::Principal;
use tidings_hub::model::audit::AuditRecord;

use crate::auth::Credential;
use crate::state::AppState;

/// The request id, as the outermost layer settled it.
#[derive(Clone)]
pub struct RequestId(pub String);

/// What authenticating the request found, for this layer.
#[derive(Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Caller>>);

/// The caller of one request.
#[derive(Default)]
struct Caller {
    principal: Option<Principal>,
    credential: Option<Credential>,
    /// An admin key was presented and refused.
    admin_key_refused: bool,
    address: Option<std::net::IpAddr>,
}

impl AuditSlot {
    /// Notes who the request authenticated as.
    pub fn set(
        &self,
        principal: Option<&Principal>,
        credential: Option<Credential>,
        admin_key_refused: bool,
        address: Option<std::net::IpAddr>,
    ) {
        let mut caller = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        caller.principal = principal.cloned();
        caller.credential = credential;
        caller.admin_key_refused = admin_key_refused;
        caller.address = address;
    }
}

/// Failed admin authentications written per minute at most; the rest are
/// counted in the next one written (so a flood of wrong keys cannot fill
/// the disk).
pub const REFUSALS_PER_MINUTE: usize = 60;

/// Bounds the entries refused admin keys make.
#[derive(Clone)]
pub struct RefusalLog {
    window: crate::throttle::Throttle<()>,
    suppressed: Arc<AtomicU64>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self {
            window: crate::throttle::Throttle::new(REFUSALS_PER_MINUTE, Duration::from_secs(60)),
            suppressed: Arc::default(),
        }
    }
}

/// What each audited route does, by method and path template.
const AUDITED: &[(&str, &str, &str)] = &[
    ("POST", "/v1/applications", "application.create"),
    ("PUT", "/v1/applications/{id}", "application.update"),
    ("PATCH", "/v1/applications/{id}", "application.activate"),
    ("DELETE", "/v1/applications/{id}", "application.delete"),
    (
        "PUT",
        "/v1/applications/{id}/secret",
        "application.secret.rotate",
    ),
    (
        "POST",
        "/v1/applications/{id}/apikey",
        "application.apikey.mint",
    ),
    ("POST", "/v1/actions", "action.register"),
    ("PATCH", "/v1/actions/{id}", "action.update"),
    ("DELETE", "/v1/actions/{id}", "action.delete"),
    ("POST", "/v1/subscriptions", "subscription.create"),
    (
        "DELETE",
        "/v1/subscriptions/{id}",
        "subscription.deactivate",
    ),
    (
        "GET",
        "/v1/subscriptions/{id}/signing-key",
        "subscription.signing_key.reveal",
    ),
    (
        "POST",
        "/v1/subscriptions/{id}/signing-key/rotate",
        "subscription.signing_key.rotate",
    ),
    ("POST", "/v1/regists/{id}", "delivery.replay"),
    ("POST", "/v1/requeues", "delivery.requeue"),
    ("POST", "/v1/purges", "delivery.purge"),
    ("POST", "/v1/backfills", "delivery.backfill"),
    ("POST", "/v1/queues", "queue.create"),
    ("DELETE", "/v1/queues/{name}", "queue.delete"),
    ("POST", "/v1/queues/{name}/purge", "queue.purge"),
    (
        "POST",
        "/v1/queues/{name}/dead-letters/requeue",
        "queue.dead_letters.requeue",
    ),
    (
        "POST",
        "/v1/queues/{name}/dead-letters/purge",
        "queue.dead_letters.purge",
    ),
];

/// The audited action of a route, if it is one.
pub fn action_of(method: &Method, template: &str) -> Option<&'static str> {
    AUDITED
        .iter()
        .find(|(m, t, _)| *m == method.as_str() && *t == template)
        .map(|(_, _, action)| *action)
}

/// The path's names where the template has parameters, joined with `/`.
fn target(template: &str, path: &str) -> Option<String> {
    let names: Vec<String> = template
        .split('/')
        .zip(path.split('/'))
        .filter(|(t, _)| t.starts_with('{'))
        .map(|(_, p)| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    (!names.is_empty()).then(|| names.join("/"))
}

fn credential_name(credential: Credential) -> &'static str {
    match credential {
        Credential::AdminKey => "admin_key",
        Credential::Bearer => "bearer",
        Credential::Signature => "signature",
        Credential::Cookie => "cookie",
        Credential::Loopback => "loopback",
    }
}

/// Writes the audit entry of a request, once it is answered.
pub async fn record(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let audited = template
        .as_deref()
        .and_then(|t| action_of(request.method(), t));
    // Only audited routes and requests presenting an admin key are watched:
    // the rest (publishes, the queue API's sends, receives and acks) pass
    // through without a slot or a copy of their path.
    if audited.is_none() && !crate::auth::admin_key_given(request.headers()) {
        return next.run(request).await;
    }
    let slot = AuditSlot::default();
    request.extensions_mut().insert(slot.clone());
    let path = request.uri().path().to_owned();
    let request_id = request.extensions().get::<RequestId>().map(|r| r.0.clone());
    let response = next.run(request).await;
    let status = response.status();
    let caller = std::mem::take(&mut *slot.0.lock().unwrap_or_else(PoisonError::into_inner));
    let action = if caller.admin_key_refused {
        if !state.refusals.window.allow(()) {
            state.refusals.suppressed.fetch_add(1, Ordering::Relaxed);
            return response;
        }
        "admin.authentication.failed"
    } else {
        match audited {
            Some(action) if status.is_success() => action,
            _ => return response,
        }
    };
    let (actor, application) = match &caller.principal {
        Some(Principal::Admin) => ("admin", None),
        Some(Principal::System) => ("system", None),
        Some(Principal::Application(app)) => ("application", Some(app.clone())),
        None => ("anonymous", None),
    };
    let entry = AuditRecord {
        action: action.to_owned(),
        target: template.as_deref().and_then(|t| target(t, &path)),
        actor: actor.to_owned(),
        application,
        credential: caller.credential.map(|c| credential_name(c).to_owned()),
        status: status.as_u16(),
        address: caller.address.map(|a| a.to_string()),
        request_id: request_id.clone(),
        suppressed: if caller.admin_key_refused {
            state.refusals.suppressed.swap(0, Ordering::Relaxed)
        } else {
            0
        },
    };
    // The change is made and answered: a failure to record it is logged
    // loudly, not turned into a failure of the request.
    if let Err(e) = state.hub.record_audit(entry).await {
        tracing::error!(error = %e, action, %path, request_id = request_id.as_deref().unwrap_or("-"), "could not write the audit log");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_the_paths_names() {
        assert_eq!(
            target(
                "/v1/applications/{id}/secret",
                "/v1/applications/shop/secret"
            )
            .as_deref(),
            Some("shop")
        );
        assert_eq!(
            target("/v1/queues/{name}/purge", "/v1/queues/a%20b/purge").as_deref(),
            Some("a b")
        );
        assert_eq!(target("/v1/requeues", "/v1/requeues"), None);
        assert_eq!(
            action_of(&Method::PUT, "/v1/applications/{id}/secret"),
            Some("application.secret.rotate")
        );
        assert_eq!(action_of(&Method::GET, "/v1/applications"), None);
    }
}
