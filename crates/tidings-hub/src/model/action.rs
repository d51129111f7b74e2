//! Actions: event types, each with a JSON Schema for its payloads.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{HubError, HubResult};
use crate::time::iso;
use crate::views::ActionView;

/// A registered action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Action {
    /// Numeric id (routes accept it or the name).
    pub id: u64,
    /// Its name (the key), e.g. `user.created`.
    pub name: String,
    /// The owning application: the only one (with admins) that may publish it.
    pub application: String,
    /// The JSON Schema of its payloads.
    pub schemata: Value,
    /// Creation time, ms since the epoch.
    pub created_at: u64,
    /// Last schema change, ms since the epoch.
    pub edited_at: Option<u64>,
    /// How long its events are kept, seconds (`None`: the hub's
    /// `--retain-events`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_secs: Option<u64>,
    /// How long a deduper of its events is remembered, seconds (`None`:
    /// the hub's `--dedup-window`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_window_secs: Option<u64>,
}

impl Action {
    /// What the API shows.
    pub fn view(&self) -> ActionView {
        ActionView {
            id: self.id,
            action: self.name.clone(),
            application: self.application.clone(),
            schemata: self.schemata.clone(),
            status: "active".to_owned(),
            timestamped: iso(self.created_at),
            unchanged: false,
            retention: self.retention_secs.map(text_of),
            dedup_window: self.dedup_window_secs.map(text_of),
        }
    }
}

/// Seconds as the API shows a length (`30days`, `1h 30m`).
fn text_of(secs: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// Checks an action name: 3 to 200 characters after trimming, no spaces or
/// control characters.
pub fn check_name(name: &str) -> HubResult<String> {
    let name = name.trim();
    if name.chars().count() < 3 || name.len() > 200 {
        return Err(HubError::unprocessable(
            "Action names must be 3 to 200 characters long",
        ));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(HubError::unprocessable(format!(
            "Action name {name:?} must not contain spaces or control characters"
        )));
    }
    Ok(name.to_owned())
}

/// A schema given as an object or as a string holding JSON.
pub fn schema_value(given: Value) -> HubResult<Value> {
    match given {
        Value::String(text) => serde_json::from_str(&text).map_err(|e| HubError::Unprocessable {
            message: "The schema does not compile".to_owned(),
            reasons: vec![format!("schemata is not valid JSON: {e}")],
        }),
        other => Ok(other),
    }
}

/// Key-order-independent fingerprint of a schema, to tell "unchanged" from "different".
pub fn same_schema(a: &Value, b: &Value) -> bool {
    // serde_json's Map is ordered by key (no preserve_order feature), so
    // equality is already independent of the order keys were written in.
    a == b
}

/// It holds no secrets.
impl crate::sealing::HoldsSecrets for Action {}
