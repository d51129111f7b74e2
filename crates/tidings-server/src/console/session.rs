//! Who is looking at the console, and the forms they may send.
//!
//! A signed-in browser holds one cookie, `tidings_console`: a ticket (who,
//! bound to what, until when) and an HMAC over it. The key is derived from
//! the admin key, so every process with that key accepts the ticket and
//! changing the admin key ends every console session; without an admin key
//! (protected mode: loopback callers are admin and need no ticket) it is
//! random per process. An application's ticket is bound to its API key's
//! digest or to a hub session, and is checked against the hub at every
//! request: a new API key, a rotated secret or a disabled application
//! ends it, as it ends the credential in the API.
//!
//! Forms carry a token, the HMAC of a random `tidings_csrf` cookie: a page
//! of another site can neither read it nor (the cookie being
//! `SameSite=Strict`) make the browser send the cookie.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use tidings_hub::Principal;

use super::ConsoleError;
use crate::state::AppState;

/// The console's session cookie.
pub const SESSION_COOKIE: &str = "tidings_console";
/// The cookie the forms' tokens are made from.
pub const CSRF_COOKIE: &str = "tidings_csrf";
/// How long a console session lasts: as the hub's sessions (8 hours).
pub const SESSION_MS: u64 = tidings_hub::hub::sessions::SESSION_TTL_MS;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The key the console signs its tickets and tokens with.
pub struct ConsoleKey([u8; 32]);

impl ConsoleKey {
    /// Derived from the admin key (shared by every process that has it), or
    /// random without one.
    pub fn new(admin_key: Option<&str>) -> Self {
        use sha2::Digest;
        Self(match admin_key {
            Some(key) => {
                let mut hasher = sha2::Sha256::new();
                hasher.update(b"tidings console\n");
                hasher.update(key.as_bytes());
                hasher.finalize().into()
            }
            None => rand::random(),
        })
    }

    /// An HMAC keyed with the console's key: zero-padded to SHA-256's
    /// block, which is what HMAC does with a shorter key, so making it
    /// cannot fail.
    fn hmac(&self) -> HmacSha256 {
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.0);
        <HmacSha256 as KeyInit>::new(&block.into())
    }

    fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = self.hmac();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }

    fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut mac = self.hmac();
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(tag).is_ok()
    }

    /// The form token for a `tidings_csrf` cookie.
    pub fn csrf_token(&self, cookie: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(&[b"csrf\n", cookie.as_bytes()]))
    }

    /// The cookie value of a ticket.
    pub fn seal(&self, ticket: &Ticket) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(ticket).unwrap_or_default());
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&[b"ticket\n", body.as_bytes()]));
        format!("{body}.{tag}")
    }

    /// The ticket of a cookie value, if this key signed it.
    pub fn open(&self, value: &str) -> Option<Ticket> {
        let (body, tag) = value.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if !self.verify(&[b"ticket\n", body.as_bytes()], &tag) {
            return None;
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
    }
}

/// What a console session stands for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "as", rename_all = "snake_case")]
pub enum Grant {
    /// Signed in with the admin key.
    Admin,
    /// An application, signed in with its API key (kept as its digest).
    ApiKey {
        /// The digest of the key.
        digest: String,
    },
    /// An application, signed in with its name and secret: a hub session.
    Session {
        /// The session's token.
        token: String,
    },
}

/// A signed console session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ticket {
    /// What it grants.
    pub grant: Grant,
    /// Until when, ms since the epoch.
    pub until: u64,
}

/// Who is looking at a page, and the token their forms must carry.
pub struct Viewer {
    /// Whom the hub sees.
    pub principal: Principal,
    /// Signed in with a ticket (false: protected mode's loopback admin).
    pub signed_in: bool,
    /// The token forms carry.
    pub csrf: String,
    /// A `tidings_csrf` cookie to set (this browser had none).
    pub new_csrf_cookie: Option<String>,
    /// Cookies are `Secure` (the server speaks TLS).
    pub secure: bool,
}

impl Viewer {
    /// The admin is looking.
    pub fn is_admin(&self) -> bool {
        self.principal.is_admin()
    }

    /// The application looking, if one is.
    pub fn application(&self) -> Option<&str> {
        match &self.principal {
            Principal::Application(app) => Some(app),
            _ => None,
        }
    }

    /// Whether the viewer may see what belongs to `application`.
    pub fn may_see(&self, application: &str) -> bool {
        self.application().is_none_or(|own| own == application)
    }
}

/// Where a request stands before a page decides: the viewer if one is
/// signed in, and the form token either way (the sign-in form needs one).
pub struct Visit {
    /// Who, if anyone.
    pub viewer: Option<Viewer>,
    /// The form token.
    pub csrf: String,
    /// A `tidings_csrf` cookie to set.
    pub new_csrf_cookie: Option<String>,
    /// Cookies are `Secure`.
    pub secure: bool,
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, for the console's paths.
pub fn set_cookie(name: &str, value: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("tidings_invalid=; Path=/; Max-Age=0"))
}

/// The principal a ticket stands for now, if it still holds.
fn principal_of(state: &AppState, ticket: &Ticket) -> Option<Principal> {
    if ticket.until <= state.hub.now_ms() {
        return None;
    }
    match &ticket.grant {
        // A ticket signed with a key derived from the admin key; without
        // one the key is this process's own.
        Grant::Admin => Some(Principal::Admin),
        Grant::ApiKey { digest } => state
            .hub
            .application_by_api_key_digest(digest)
            .map(Principal::Application),
        Grant::Session { token } => state
            .hub
            .application_by_session(token)
            .map(Principal::Application),
    }
}

impl FromRequestParts<AppState> for Visit {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = &state.console.key;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let ticket = cookie(&parts.headers, SESSION_COOKIE).and_then(|v| key.open(v));
        let signed_in = ticket.as_ref().and_then(|t| principal_of(state, t));
        let loopback_admin = state.auth.admin_key.is_none()
            && peer.is_some_and(|p| p.ip().is_loopback())
            && !crate::auth::forwarded(&parts.headers);
        let (csrf_cookie, new_csrf_cookie) = match cookie(&parts.headers, CSRF_COOKIE) {
            Some(value) => (value.to_owned(), None),
            None => {
                let value = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>());
                (value.clone(), Some(value))
            }
        };
        let csrf = key.csrf_token(&csrf_cookie);
        let secure = state.tls;
        let viewer = match (signed_in, loopback_admin) {
            (Some(principal), _) => Some((principal, true)),
            (None, true) => Some((Principal::Admin, false)),
            (None, false) => None,
        }
        .map(|(principal, signed_in)| Viewer {
            principal,
            signed_in,
            csrf: csrf.clone(),
            new_csrf_cookie: new_csrf_cookie.clone(),
            secure,
        });
        Ok(Visit {
            viewer,
            csrf,
            new_csrf_cookie,
            secure,
        })
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let visit = Visit::from_request_parts(parts, state).await?;
        visit.viewer.ok_or_else(|| {
            let wanted = parts
                .uri
                .path_and_query()
                .map_or("/console/", |p| p.as_str())
                .to_owned();
            ConsoleError::SignIn(wanted)
        })
    }
}

/// Checks a form's token against the browser's cookie (and refuses a
/// request the browser says came from another site).
pub fn check_form(
    state: &AppState,
    headers: &HeaderMap,
    form: &super::Form,
) -> Result<(), ConsoleError> {
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site");
    let expected = cookie(headers, CSRF_COOKIE).map(|c| state.console.key.csrf_token(c));
    let given = form.get("csrf");
    match (expected, given) {
        (Some(expected), Some(given))
            if !cross_site
                && tidings_hub::signature::digest(&expected)
                    == tidings_hub::signature::digest(given) =>
        {
            Ok(())
        }
        _ => Err(ConsoleError::Csrf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_only_with_its_key_and_unchanged() {
        let key = ConsoleKey::new(Some("an admin key of some length"));
        let ticket = Ticket {
            grant: Grant::ApiKey {
                digest: "abc".into(),
            },
            until: 42,
        };
        let sealed = key.seal(&ticket);
        let opened = key.open(&sealed).map(|t| (t.grant, t.until));
        assert_eq!(opened, Some((ticket.grant.clone(), 42)));
        // The same admin key in another process derives the same key.
        assert!(
            ConsoleKey::new(Some("an admin key of some length"))
                .open(&sealed)
                .is_some()
        );
        assert!(
            ConsoleKey::new(Some("another admin key"))
                .open(&sealed)
                .is_none()
        );
        let forged = Ticket {
            grant: Grant::Admin,
            until: 42,
        };
        let forged_body = key.seal(&forged);
        let (body, _) = forged_body.split_once('.').unwrap_or_default();
        let (_, tag) = sealed.split_once('.').unwrap_or_default();
        assert!(key.open(&format!("{body}.{tag}")).is_none());
        assert!(key.open("garbage").is_none());
    }

    #[test]
    fn the_padded_key_is_hmac_with_the_key_itself() {
        let key = ConsoleKey::new(Some("some admin key"));
        let mut plain = <HmacSha256 as KeyInit>::new_from_slice(&key.0).expect("any length");
        plain.update(b"csrf\nabc");
        let expected = plain.finalize().into_bytes().to_vec();
        assert_eq!(key.mac(&[b"csrf\n", b"abc"]), expected);
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x_tidings_csrf=no; tidings_csrf=yes; other=1"),
        );
        assert_eq!(cookie(&headers, CSRF_COOKIE), Some("yes"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), None);
    }
}
