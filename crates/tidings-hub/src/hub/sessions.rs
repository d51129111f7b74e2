//! Sessions (`POST /v1/tokens`): an application trades its name and secret
//! for a token, sent back as the `Authentication` cookie (as Amebo does) or
//! as a bearer token. Tokens are random; only their SHA-256 is stored, with
//! an expiry, so they survive restarts and a copy of the data reveals none.
//!
//! A session belongs to one incarnation of its application with one secret:
//! rotating the secret ends it, and so does deleting the application (a
//! new one of the same name starts with none).

use serde::{Deserialize, Serialize};

use super::Hub;
use crate::error::{HubError, HubResult};
use crate::ids::new_secret;
use crate::model::Application;
use crate::signature::digest;
use crate::time::now_ms;

/// How long a session lasts (Amebo: 8 hours).
pub const SESSION_TTL_MS: u64 = 8 * 3600 * 1000;

/// A stored session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Whose it is.
    pub application: String,
    /// When it ends, ms since the epoch.
    pub expires_at: u64,
    /// The [`fingerprint`] of the application when the session opened:
    /// while it differs from now, the session is over. (Sessions stored
    /// before it was kept have none, and are over.)
    #[serde(default)]
    pub fingerprint: String,
}

/// What a session is bound to: the application's incarnation and its
/// secret, hashed.
fn fingerprint(app: &Application) -> String {
    digest(&format!(
        "{}\n{}\n{}",
        app.incarnation, app.created_at, app.secret
    ))
}

/// `POST /v1/tokens`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenRequest {
    /// The application's name (Amebo: `username`).
    pub username: String,
    /// The application's secret.
    pub password: String,
    /// `token` for applications (user accounts come with a later issue).
    pub scheme: String,
}

/// The answer when credentials do not match (Amebo's wording).
const REFUSED: &str = "could not authenticate microservice";

impl Hub {
    /// Opens a session for an application. Returns the token.
    pub async fn open_session(&self, request: TokenRequest) -> HubResult<String> {
        if request.scheme != "token" {
            return Err(HubError::Unauthenticated(REFUSED.to_owned()));
        }
        let app = self
            .catalog()
            .applications
            .get(&request.username)
            .filter(|a| a.active)
            .cloned()
            .ok_or_else(|| HubError::Unauthenticated(REFUSED.to_owned()))?;
        // Compare digests: equal-length, so the comparison time says nothing.
        if digest(&app.secret) != digest(&request.password) {
            return Err(HubError::Unauthenticated(REFUSED.to_owned()));
        }
        let token = new_secret();
        let hash = digest(&token);
        let session = Session {
            application: request.username,
            expires_at: now_ms() + SESSION_TTL_MS,
            fingerprint: fingerprint(&app),
        };
        self.write_record(&self.inner.tables.sessions, &hash, &session)
            .await?;
        let mut catalog = self.catalog_mut();
        let now = now_ms();
        catalog.sessions.retain(|_, s| s.expires_at > now);
        catalog.sessions.insert(hash, session);
        Ok(token)
    }

    /// The active application a session token belongs to, if still valid.
    pub fn application_by_session(&self, token: &str) -> Option<String> {
        let catalog = self.catalog();
        let session = catalog.sessions.get(&digest(token))?;
        if session.expires_at <= now_ms() {
            return None;
        }
        catalog
            .applications
            .get(&session.application)
            .filter(|a| a.active && fingerprint(a) == session.fingerprint)
            .map(|a| a.name.clone())
    }
}
