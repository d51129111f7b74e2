//! Who is calling: the credentials of Amebo 0.9.6, and protected mode.
//!
//! Tried in order (the first credential present decides; a wrong one makes
//! the caller anonymous rather than falling through to the next):
//!
//! 1. `x-amebo-admin-key` (or `x-tidings-admin-key`): the admin key;
//! 2. `Authorization: Bearer <API key or session token>`: an application;
//! 3. `x-amebo-application` + `x-amebo-timestamp` + `x-amebo-signature:
//!    v1=<hex>`: HMAC-SHA256, keyed with the application's secret, of the
//!    method, path with query, timestamp and body
//!    ([`tidings_hub::signature::request_parts`]); the timestamp within
//!    300 s, and each signature accepted once. Amebo's form (the body
//!    alone, or `"<timestamp>." + body`) only with `accept_legacy_signatures`;
//! 4. `Cookie: Authentication=<session token>` (from `POST /v1/tokens`);
//! 5. protected mode (no admin key configured): a loopback caller is admin,
//!    unless the request came through a proxy (it carries a forwarding
//!    header): behind a proxy on the same host every client would be
//!    loopback.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{HeaderMap, Method, Uri};
use tidings_hub::{Hub, Principal, signature};

/// Seconds a signed request's timestamp may differ from now.
pub const REPLAY_TOLERANCE_SECS: u64 = 300;

/// How the server authenticates.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// The admin key; `None` runs in protected mode.
    pub admin_key: Option<String>,
    /// A token that reads `/metrics` (`Authorization: Bearer <token>`),
    /// for a scraper that should not hold the admin key.
    pub metrics_token: Option<String>,
    /// `/metrics` answers anyone, even with an admin key (an opt-out of the
    /// default, logged at start).
    pub public_metrics: bool,
    /// Accept Amebo's request signatures, over the body alone: unsafe (a
    /// captured request can be replayed, as another method and path too),
    /// for old clients only; logged at start.
    pub accept_legacy_signatures: bool,
    /// Proxies whose `X-Forwarded-For` is believed for the client's address
    /// (logs, login limits). Never for credentials.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the last address of `X-Forwarded-For` that is not a trusted proxy's.
pub fn client_address(
    auth: &AuthConfig,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Option<std::net::IpAddr> {
    let peer = peer?.ip();
    let trusted = |ip: &std::net::IpAddr| auth.trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<std::net::IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted(ip))
            .unwrap_or(peer),
    )
}

/// The signatures seen within the replay window: each is accepted once.
pub type SeenSignatures = crate::throttle::Throttle<String>;

/// A replay cache: a signature is refused once seen, for as long as its
/// timestamp could still be accepted.
pub fn seen_signatures() -> SeenSignatures {
    crate::throttle::Throttle::new(1, Duration::from_secs(2 * REPLAY_TOLERANCE_SECS))
}

/// Which credential a request authenticated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The admin key.
    AdminKey,
    /// A bearer token: an API key or a session.
    Bearer,
    /// A request signature.
    Signature,
    /// The session cookie.
    Cookie,
    /// Protected mode: a direct loopback caller.
    Loopback,
}

/// A request as presented: what authenticating it may look at.
pub struct Presented<'a> {
    /// Its method.
    pub method: &'a Method,
    /// Its target.
    pub uri: &'a Uri,
    /// Its headers.
    pub headers: &'a HeaderMap,
    /// Its body, as received.
    pub body: &'a [u8],
    /// The caller's address.
    pub peer: Option<SocketAddr>,
}

/// Whether a request may read `/metrics`: in protected mode, or with
/// `public_metrics`, anyone who reaches the server; otherwise the admin or
/// the bearer of the metrics token.
pub fn may_read_metrics(auth: &AuthConfig, who: Option<&Principal>, headers: &HeaderMap) -> bool {
    if auth.admin_key.is_none() || auth.public_metrics {
        return true;
    }
    if who.is_some_and(Principal::is_admin) {
        return true;
    }
    let bearer = header(headers, "authorization")
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    matches!((&auth.metrics_token, bearer), (Some(token), Some(given)) if same(token, given))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Compares secrets without revealing where they differ.
fn same(a: &str, b: &str) -> bool {
    signature::digest(a) == signature::digest(b)
}

/// The principal of a request, if it authenticates, and with what.
pub fn principal(
    hub: &Hub,
    auth: &AuthConfig,
    seen: &SeenSignatures,
    request: &Presented<'_>,
) -> Option<(Principal, Credential)> {
    let headers = request.headers;
    // A hub's own webhook (to this hub, or another): never a credential.
    if headers.contains_key(tidings_hub::delivery::webhook::DELIVERY_HEADER) {
        return None;
    }
    if let Some(given) =
        header(headers, "x-amebo-admin-key").or_else(|| header(headers, "x-tidings-admin-key"))
    {
        return match &auth.admin_key {
            Some(key) if same(key, given) => Some((Principal::Admin, Credential::AdminKey)),
            _ => None,
        };
    }
    if let Some(value) = header(headers, "authorization") {
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?;
        let token = token.trim();
        return hub
            .application_by_api_key(token)
            .or_else(|| hub.application_by_session(token))
            .map(|app| (Principal::Application(app), Credential::Bearer));
    }
    if let (Some(app), Some(sig)) = (
        header(headers, "x-amebo-application"),
        header(headers, "x-amebo-signature"),
    ) {
        // The current secret, or the replaced one during its grace period.
        let secrets = hub.application_secrets(app)?;
        let valid = match sig.strip_prefix("v1=") {
            Some(hex) => signed_request(&secrets, seen, request, hex),
            None if auth.accept_legacy_signatures => secrets
                .iter()
                .any(|secret| legacy_signature(secret, request, sig)),
            None => false,
        };
        return valid.then(|| {
            (
                Principal::Application(app.to_owned()),
                Credential::Signature,
            )
        });
    }
    if let Some(token) = session_cookie(headers) {
        return hub
            .application_by_session(token)
            .map(|app| (Principal::Application(app), Credential::Cookie));
    }
    if auth.admin_key.is_none()
        && request.peer.is_some_and(|p| p.ip().is_loopback())
        && !forwarded(headers)
    {
        return Some((Principal::Admin, Credential::Loopback));
    }
    None
}

/// Whether the request presents an admin key (right or wrong).
pub fn admin_key_given(headers: &HeaderMap) -> bool {
    headers.contains_key("x-amebo-admin-key") || headers.contains_key("x-tidings-admin-key")
}

/// Headers a proxy adds to say whom it forwards for.
pub const FORWARDING_HEADERS: [&str; 4] = [
    "forwarded",
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-host",
];

/// Whether a request came through a proxy (it carries a forwarding header).
pub fn forwarded(headers: &HeaderMap) -> bool {
    FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h))
}

/// Checks a `v1=` request signature: over method, path with query,
/// timestamp (required, within the tolerance) and body, and not seen before.
fn signed_request(
    secrets: &[String],
    seen: &SeenSignatures,
    request: &Presented<'_>,
    hex: &str,
) -> bool {
    let Some(ts) = header(request.headers, "x-amebo-timestamp") else {
        return false;
    };
    let Ok(ts_secs) = ts.parse::<u64>() else {
        return false;
    };
    let now = tidings_hub::time::now_ms() / 1000;
    let path = request
        .uri
        .path_and_query()
        .map_or(request.uri.path(), |p| p.as_str());
    let parts = signature::request_parts(request.method.as_str(), path, ts, request.body);
    now.abs_diff(ts_secs) <= REPLAY_TOLERANCE_SECS
        && secrets
            .iter()
            .any(|secret| signature::verify_hex(secret, &parts, hex))
        && seen.allow(hex.to_owned())
}

/// Amebo's signature: over the body alone (`{}` for an empty one), or
/// `"<timestamp>." + body` with the timestamp within the tolerance.
fn legacy_signature(secret: &str, request: &Presented<'_>, sig: &str) -> bool {
    let body: &[u8] = if request.body.is_empty() {
        b"{}"
    } else {
        request.body
    };
    match header(request.headers, "x-amebo-timestamp") {
        Some(ts) => {
            let Ok(ts_secs) = ts.parse::<u64>() else {
                return false;
            };
            let now = tidings_hub::time::now_ms() / 1000;
            now.abs_diff(ts_secs) <= REPLAY_TOLERANCE_SECS
                && signature::verify_hex(secret, &[ts.as_bytes(), b".", body], sig)
        }
        None => signature::verify_hex(secret, &[body], sig),
    }
}

/// The value of the `Authentication` cookie, if sent.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("Authentication="))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}
