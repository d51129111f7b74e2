//! The audit log: who changed what, when, from where.

use serde::{Deserialize, Serialize};

use crate::time::iso;

/// What happened, as the recorder tells it (the hub adds the id and the
/// time).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditRecord {
    /// What was done: `application.create`, `subscription.signing_key.rotate`,
    /// `delivery.replay`, `admin.authentication.failed`...
    pub action: String,
    /// What it was done to: the path's names (an application, a
    /// subscription id, a queue...), if any.
    pub target: Option<String>,
    /// Who did it: `admin`, `application`, `system` or `anonymous`.
    pub actor: String,
    /// The application that did it, or, for the system's entries, the one
    /// concerned.
    pub application: Option<String>,
    /// What the caller authenticated with (`admin_key`, `bearer`,
    /// `signature`, `cookie`, `loopback`).
    pub credential: Option<String>,
    /// The HTTP status it was answered with.
    pub status: u16,
    /// The client's address.
    pub address: Option<String>,
    /// The request's `X-Request-ID`.
    pub request_id: Option<String>,
    /// Entries of the same kind left out just before this one (failed
    /// authentications beyond the log's rate).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub suppressed: u64,
}

/// One entry of the audit log, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Time-ordered id (its key).
    pub id: String,
    /// When, ms since the epoch.
    pub at: u64,
    /// What happened.
    #[serde(flatten)]
    pub record: AuditRecord,
}

/// An audit entry as `GET /v1/audit` shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditView {
    /// Its id.
    pub id: String,
    /// When (ISO 8601).
    pub timestamped: String,
    /// What happened.
    #[serde(flatten)]
    pub record: AuditRecord,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl AuditEntry {
    /// What the API shows.
    pub fn view(&self) -> AuditView {
        AuditView {
            id: self.id.clone(),
            timestamped: iso(self.at),
            record: self.record.clone(),
        }
    }
}

/// It holds no secrets.
impl crate::sealing::HoldsSecrets for AuditEntry {}
