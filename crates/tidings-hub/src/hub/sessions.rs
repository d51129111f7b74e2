//! Sessions (`POST /v1/tokens`): an application trades its name and secret
//! for a token, sent back as the `Authentication` cookie (as Amebo does) or
//! as a bearer token. Tokens are random; only their SHA-256 is stored, with
//! an expiry, so they survive restarts and a copy of the data reveals none.
//!
//! A session belongs to one incarnation of its application and the secret
//! it was opened with: it ends when that secret stops being valid (at a
//! rotation, or at the end of the rotation's grace period), and when the
//! application is deleted (a new one of the same name starts with none).

use serde::{Deserialize, Serialize};

use super::Hub;
use crate::error::{HubError, HubResult};
use crate::ids::new_secret;
use crate::model::Application;
use crate::sealing::HoldsSecrets;
use crate::signature::digest;
use crate::tables::scan;
use tidings_core::RecordScan;

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

impl crate::sealing::HoldsSecrets for Session {
    fn secrets_mut(&mut self) -> Vec<(&'static str, &mut String)> {
        vec![("fingerprint", &mut self.fingerprint)]
    }
}

/// What a session is bound to: the application's incarnation and the
/// secret it was opened with, hashed.
fn fingerprint(app: &Application, secret: &str) -> String {
    digest(&format!(
        "{}\n{}\n{}",
        app.incarnation, app.created_at, secret
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
        let given = digest(&request.password);
        let secret = app
            .secrets_at(self.now_ms())
            .into_iter()
            .find(|s| digest(s) == given)
            .ok_or_else(|| HubError::Unauthenticated(REFUSED.to_owned()))?;
        let token = new_secret();
        let hash = digest(&token);
        let session = Session {
            application: request.username,
            expires_at: self.now_ms() + SESSION_TTL_MS,
            fingerprint: fingerprint(&app, secret),
        };
        self.write_record(&self.inner.tables.sessions, &hash, &session)
            .await?;
        let mut catalog = self.catalog_mut();
        let now = self.now_ms();
        catalog.sessions.retain(|_, s| s.expires_at > now);
        catalog.sessions.insert(hash, session);
        Ok(token)
    }

    /// The active application a session token belongs to, if still valid.
    pub fn application_by_session(&self, token: &str) -> Option<String> {
        let catalog = self.catalog();
        let session = catalog.sessions.get(&digest(token))?;
        let now = self.now_ms();
        if session.expires_at <= now {
            return None;
        }
        catalog
            .applications
            .get(&session.application)
            .filter(|a| {
                a.active
                    && a.secrets_at(now)
                        .into_iter()
                        .any(|s| fingerprint(a, s) == session.fingerprint)
            })
            .map(|a| a.name.clone())
    }
}

impl Hub {
    /// Seals again, with the first secrets key, every stored secret that is
    /// in clear or sealed with another key (run in the background at open);
    /// expired sessions are removed on the way. Returns how many records
    /// were written. Afterwards the other keys can be dropped.
    pub async fn reseal(&self) -> HubResult<usize> {
        let sealer = self.inner.config.sealer.clone();
        let Some(key) = sealer.current_id().map(str::to_owned) else {
            return Ok(0);
        };
        let tables = &self.inner.tables;
        let mut written = 0;
        written += self
            .reseal_table::<Application>(
                &tables.applications,
                |c, k| c.applications.get(k).cloned(),
                |_| false,
            )
            .await?;
        written += self
            .reseal_table::<crate::model::Subscription>(
                &tables.subscriptions,
                |c, k| c.subscriptions.get(k).cloned(),
                |_| false,
            )
            .await?;
        written += self
            .reseal_table::<Session>(
                &tables.sessions,
                |c, k| c.sessions.get(k).cloned(),
                |s| s.expires_at <= self.now_ms(),
            )
            .await?;
        tracing::info!(
            key = %key,
            records = written,
            "every stored secret is sealed with the first secrets key: any other key can be removed"
        );
        Ok(written)
    }

    /// Re-seals the stale records of one table from the catalog's copy
    /// (one at a time, under the catalog's lock, so no change is lost); a
    /// stale record the catalog does not have is removed if `discard` says
    /// it may be (an expired session), and left alone otherwise.
    async fn reseal_table<T>(
        &self,
        table: &tidings_core::TableName,
        current: impl Fn(&super::Catalog, &str) -> Option<T>,
        discard: impl Fn(&T) -> bool,
    ) -> HubResult<usize>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + HoldsSecrets + Clone,
    {
        let sealer = &self.inner.config.sealer;
        let stored = scan::<T>(&**self.broker(), table, RecordScan::all()).await?;
        let mut written = 0;
        for (key, mut record) in stored {
            if !sealer.stale_record(&mut record) {
                continue;
            }
            let _guard = self.inner.changes.lock().await;
            let latest = current(&self.catalog(), &key);
            match latest {
                Some(record) => self.write_record(table, &key, &record).await?,
                None if discard(&record) => {
                    let mut tx = tidings_core::Transaction::new();
                    tx.delete(table.clone(), key.clone());
                    self.commit(tx).await?;
                }
                None => continue,
            }
            written += 1;
        }
        Ok(written)
    }
}
