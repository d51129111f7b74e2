//! The console: web pages served by `tidings serve` at `/` and
//! `/console/...`, where an operator (the admin) or a service team (an
//! application, seeing only its own) sees and fixes what is happening.
//!
//! Pages are rendered on the server ([`maud`]); a small script of our own
//! (`assets/console.js`) refreshes the live parts, and the charts are inline
//! SVG. Everything is in the binary: no CDN, no build step
//! (docs/decisions/0026-the-console-rendered-on-the-server.md).
//!
//! The pages call the [`Hub`](tidings_hub::Hub) with the viewer's
//! principal, so the API's rules hold; every form carries a CSRF token
//! ([`session`]); every change is written to the audit log as the API's
//! are, with the credential `console`.

mod actions;
mod applications;
mod chart;
mod dead_letters;
mod events;
mod example;
mod format;
mod overview;
mod page;
mod queues;
pub mod session;
mod sign_in;
mod subscriptions;
pub mod trend;

use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tidings_hub::{HubError, Principal};

use crate::state::AppState;

pub use session::ConsoleKey;
pub use trend::Trend;

/// What the console keeps in the server's state.
pub struct Console {
    /// Signs sessions and form tokens.
    pub key: ConsoleKey,
    /// The last hour, sampled.
    pub trend: Trend,
}

impl Console {
    /// The console of a server with this admin key (or none).
    pub fn new(admin_key: Option<&str>) -> Self {
        Self {
            key: ConsoleKey::new(admin_key),
            trend: Trend::default(),
        }
    }
}

/// The console's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(overview::page))
        .route("/console/live", get(overview::live))
        .route("/console/assets/{file}", get(page::asset))
        .route("/console/sign-in", get(sign_in::form).post(sign_in::submit))
        .route("/console/sign-out", post(sign_in::sign_out))
        .route(
            "/console/applications",
            get(applications::list).post(applications::create),
        )
        .route(
            "/console/applications/{name}/secret",
            post(applications::rotate_secret),
        )
        .route(
            "/console/applications/{name}/apikey",
            post(applications::new_api_key),
        )
        .route(
            "/console/applications/{name}/active",
            post(applications::set_active),
        )
        .route(
            "/console/actions",
            get(actions::list).post(actions::register),
        )
        .route("/console/actions/{id}", get(actions::one))
        .route("/console/actions/{id}/try", post(actions::try_publish))
        .route("/console/events", get(events::list))
        .route("/console/events/{id}", get(events::one))
        .route("/console/events/{id}/replay", post(events::replay))
        .route(
            "/console/dead-letters",
            get(dead_letters::list).post(dead_letters::act),
        )
        .route("/console/queues", get(queues::list))
        .route("/console/queues/{name}", get(queues::one))
        .route("/console/queues/{name}/dead-letters", post(queues::act))
        .route(
            "/console/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route(
            "/console/subscriptions/{id}/active",
            post(subscriptions::set_active),
        )
        .route(
            "/console/subscriptions/{id}/test",
            post(subscriptions::send_test),
        )
}

/// A form as posted (`application/x-www-form-urlencoded`), its CSRF token
/// checked ([`session::check_form`]): a handler that takes one is safe.
pub struct Form(Vec<(String, String)>);

impl Form {
    /// A field's value (the last, if repeated), if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of a repeated field (checkboxes), in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .collect()
    }

    /// A field's value, trimmed; `None` when missing or blank.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// Whether a checkbox was ticked.
    pub fn ticked(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v == "on" || v == "true")
    }
}

impl FromRequest<AppState> for Form {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let form_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !form_type {
            return Err(ConsoleError::BadRequest(
                "the console's forms are sent as application/x-www-form-urlencoded".into(),
            ));
        }
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, state.body_limit)
            .await
            .map_err(|_| {
                ConsoleError::BadRequest("the form is larger than the server accepts".into())
            })?;
        let form = Self(form_urlencoded::parse(&body).into_owned().collect());
        // Every form is checked here, before any handler sees it.
        session::check_form(state, &parts.headers, &form)?;
        Ok(form)
    }
}

/// Why a console request was not served.
#[derive(Debug)]
pub enum ConsoleError {
    /// Nobody is signed in: to the sign-in page, then back to this path.
    SignIn(String),
    /// A form without a valid token.
    Csrf,
    /// Not this viewer's to see or do.
    Forbidden(String),
    /// Nothing there.
    NotFound(String),
    /// A malformed request.
    BadRequest(String),
    /// What the hub answered.
    Hub(HubError),
    /// An answer in the API's terms (a failure of the server's own).
    Api(crate::error::ApiError),
}

impl From<HubError> for ConsoleError {
    fn from(e: HubError) -> Self {
        Self::Hub(e)
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::SignIn(wanted) => {
                let next: String =
                    form_urlencoded::byte_serialize(wanted.as_bytes()).collect();
                return Redirect::to(&format!("/console/sign-in?next={next}")).into_response();
            }
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                "This form has expired or was sent from another site. Reload the page and try again."
                    .to_owned(),
            ),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, m),
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            Self::Hub(e) => return Self::Api(e.into()).into_response(),
            Self::Api(e) => {
                let (status, body, internal) = e.into_parts();
                if let Some(detail) = internal {
                    tracing::error!(error = %detail, "a console page failed");
                }
                let message = body["error"].as_str().unwrap_or("failed").to_owned();
                (status, message)
            }
        };
        page::error(status, &message)
    }
}

/// A refusal a form can be corrected from: the status the API would
/// answer and a notice with the hub's message and reasons. A failure of
/// the server's own stays an error (an error page; the detail is logged).
fn refusal(e: HubError) -> Result<(StatusCode, maud::Markup), ConsoleError> {
    let api = crate::error::ApiError::from(e);
    if api.status().is_server_error() {
        return Err(ConsoleError::Api(api));
    }
    let (status, body, _) = api.into_parts();
    let message = body["error"].as_str().unwrap_or("refused").to_owned();
    let listed = |key: &str| -> Vec<String> {
        body[key]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (reasons, errors) = (listed("reasons"), listed("errors"));
    let shown = page::notice(
        "bad",
        maud::html! {
            p { (message) }
            @if !reasons.is_empty() || !errors.is_empty() {
                ul.reasons { @for r in reasons.iter().chain(&errors) { li { (r) } } }
            }
        },
    );
    Ok((status, shown))
}

/// The result of a console handler.
pub type ConsoleResult<T = Response> = Result<T, ConsoleError>;

/// Writes the audit entry of a change made through the console.
async fn audit(state: &AppState, viewer: &session::Viewer, action: &str, target: &str) {
    let (actor, application) = match &viewer.principal {
        Principal::Admin | Principal::System => ("admin", None),
        Principal::Application(app) => ("application", Some(app.clone())),
    };
    let entry = tidings_hub::model::audit::AuditRecord {
        action: action.to_owned(),
        target: Some(target.to_owned()),
        actor: actor.to_owned(),
        application,
        credential: Some("console".to_owned()),
        status: 200,
        address: None,
        request_id: None,
        suppressed: 0,
    };
    if let Err(e) = state.hub.record_audit(entry).await {
        tracing::error!(error = %e, action, target, "could not write the audit log");
    }
}
