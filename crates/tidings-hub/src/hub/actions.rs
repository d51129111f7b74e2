//! Registering actions (event types) and their schemas.

use crate::model::period::Period;
use serde_json::{Value, json};
use tidings_core::Transaction;
pub use tidings_hub_api::{ActionUpdate, NewAction};

use super::{Hub, Page};
use crate::error::{HubError, HubResult};
use crate::model::Action;
use crate::model::action::{check_name, same_schema, schema_value};
use crate::principal::Principal;
use crate::schema::Schema;
use crate::tables::{decode, encode};
use crate::views::{ActionEdited, ActionView, Removed, Validation};

/// The action the hub publishes when a delivery is dead-lettered.
pub const DEAD_LETTERED_ACTION: &str = "tidings.delivery.dead_lettered";

/// The record of `hub.meta` holding the next action id.
const NEXT_ACTION_ID: &str = "next_action_id";

/// Longest retention or dedup window an action may ask for: ten years.
const MAX_PERIOD: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 24 * 3600);

/// A period given for an action, in seconds.
fn period_secs(given: Option<&Period>, field: &str) -> HubResult<Option<u64>> {
    given
        .map(|p| crate::model::period::duration(p, field, MAX_PERIOD).map(|d| d.as_secs()))
        .transpose()
}

fn compile(schemata: &Value) -> HubResult<Schema> {
    Schema::compile(schemata).map_err(|reasons| HubError::Unprocessable {
        message: "The schema does not compile".to_owned(),
        reasons,
    })
}

/// The size of a schema as the hub keeps it, bytes.
fn schema_bytes(schemata: &Value) -> usize {
    serde_json::to_vec(schemata).map_or(usize::MAX, |v| v.len())
}

impl Hub {
    /// Refuses a schema larger than the limit, before it is compiled.
    fn check_schema_size(&self, schemata: &Value) -> HubResult<usize> {
        let bytes = schema_bytes(schemata);
        let limit = self.inner.config.max_schema_bytes;
        if bytes > limit {
            return Err(HubError::unprocessable(format!(
                "schemata - {bytes} bytes; a schema may have at most {limit} (--max-schema-bytes)"
            )));
        }
        Ok(bytes)
    }

    /// Refuses an action that would take `application` past its number of
    /// actions or its schema bytes (`replacing`: the action it replaces).
    fn check_application_budget(
        &self,
        application: &str,
        replacing: Option<&str>,
        bytes: usize,
    ) -> HubResult<()> {
        let config = &self.inner.config;
        let catalog = self.catalog();
        let (mut count, mut total) = (1, bytes);
        for entry in catalog.actions.values() {
            if entry.action.application == application
                && Some(entry.action.name.as_str()) != replacing
            {
                count += 1;
                total = total.saturating_add(schema_bytes(&entry.action.schemata));
            }
        }
        if count > config.max_actions_per_application {
            return Err(HubError::unprocessable(format!(
                "{application} has {} actions, the most an application may have (--max-actions-per-application)",
                count - 1
            )));
        }
        if total > config.max_schema_bytes_per_application {
            return Err(HubError::unprocessable(format!(
                "{application}'s schemas would take {total} bytes; an application's may take at most {} (--max-schema-bytes-per-application)",
                config.max_schema_bytes_per_application
            )));
        }
        Ok(())
    }

    /// Registers an action. Returns its view and whether it was created
    /// (`false`: the same schema was registered already).
    pub async fn register_action(
        &self,
        who: &Principal,
        new: NewAction,
    ) -> HubResult<(ActionView, bool)> {
        let name = check_name(&new.action)?;
        if !who.may_act_as(&new.application) {
            return Err(HubError::Forbidden(format!(
                "Only {} itself or a superadmin can register its actions",
                new.application
            )));
        }
        let schemata = schema_value(new.schemata)?;
        let bytes = self.check_schema_size(&schemata)?;
        let schema = compile(&schemata)?;
        let _guard = self.inner.changes.lock().await;
        let next_id = {
            let catalog = self.catalog();
            match catalog.applications.get(&new.application) {
                Some(app) if app.active => {}
                _ => {
                    return Err(HubError::NotFound(format!(
                        "Application {} does not exist or is inactive",
                        new.application
                    )));
                }
            }
            if let Some(existing) = catalog.actions.get(&name) {
                let action = &existing.action;
                if action.application != new.application {
                    return Err(HubError::conflict(format!(
                        "Action {name} already belongs to {}",
                        action.application
                    )));
                }
                if same_schema(&action.schemata, &schemata) {
                    let view = ActionView {
                        unchanged: true,
                        ..action.view()
                    };
                    return Ok((view, false));
                }
                return Err(HubError::Conflict {
                    message: format!(
                        "Action {name} already exists with a different schema. Edit it with PATCH /v1/actions/{} or register a new name.",
                        action.id
                    ),
                    reasons: vec!["the schema differs from the registered one".to_owned()],
                });
            }
            catalog.next_action_id()
        };
        self.check_application_budget(&new.application, None, bytes)?;
        let mut action = Action {
            id: next_id,
            name: name.clone(),
            application: new.application,
            schemata,
            created_at: self.now_ms(),
            edited_at: None,
            retention_secs: period_secs(new.retention.as_ref(), "retention")?,
            dedup_window_secs: period_secs(new.dedup_window.as_ref(), "dedup_window")?,
        };
        // Ids come from a counter record moved by compare-and-set with the
        // insert, so processes sharing the store never hand out one twice.
        let (meta, counter) = (&self.inner.tables.meta, NEXT_ACTION_ID);
        loop {
            let stored = self.inner.broker.get_record(meta, counter).await?;
            let counted = match &stored {
                Some(value) => decode::<u64>(meta, counter, value)?,
                None => 0,
            };
            action.id = counted.max(next_id);
            let mut tx = Transaction::new();
            tx.expect(meta.clone(), counter, stored)
                .put(meta.clone(), counter, encode(&(action.id + 1))?)
                .insert(
                    self.inner.tables.actions.clone(),
                    name.clone(),
                    encode(&action)?,
                );
            match self.commit(tx).await {
                Ok(_) => break,
                // Another process took an id meanwhile: take the next.
                Err(tidings_core::Error::RecordChanged { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let view = action.view();
        self.catalog_mut().put_action(action, schema);
        self.changed();
        Ok((view, true))
    }

    /// Lists actions by name, filtered by substrings.
    pub fn list_actions(
        &self,
        id: Option<&str>,
        name: Option<&str>,
        application: Option<&str>,
        since: Option<u64>,
        page: Page,
    ) -> Vec<ActionView> {
        let catalog = self.catalog();
        let all: Vec<&Action> = catalog
            .actions
            .values()
            .map(|e| &e.action)
            .filter(|a| id.is_none_or(|id| a.id.to_string() == id || a.name == id))
            .filter(|a| name.is_none_or(|n| a.name.contains(n)))
            .filter(|a| application.is_none_or(|n| a.application.contains(n)))
            .filter(|a| since.is_none_or(|t| a.created_at >= t))
            .collect();
        page.slice(&all).into_iter().map(Action::view).collect()
    }

    fn action_record(&self, id: &str) -> HubResult<Action> {
        self.catalog()
            .action(id)
            .map(|e| e.action.clone())
            .ok_or_else(|| HubError::NotFound(format!("Action {id} does not exist")))
    }

    /// Replaces an action's schema (owner or admin).
    pub async fn update_action(
        &self,
        who: &Principal,
        id: &str,
        update: ActionUpdate,
    ) -> HubResult<ActionEdited> {
        if update.schemata.is_none() && update.retention.is_none() && update.dedup_window.is_none()
        {
            return Err(HubError::unprocessable(
                "give a schemata, retention or dedup_window to change",
            ));
        }
        let retention = period_secs(update.retention.as_ref(), "retention")?;
        let dedup_window = period_secs(update.dedup_window.as_ref(), "dedup_window")?;
        let compiled = match update.schemata {
            Some(schemata) => {
                let schemata = schema_value(schemata)?;
                let bytes = self.check_schema_size(&schemata)?;
                let schema = compile(&schemata)?;
                Some((schemata, bytes, schema))
            }
            None => None,
        };
        let _guard = self.inner.changes.lock().await;
        let mut action = self.action_record(id)?;
        if !who.may_act_as(&action.application) {
            return Err(HubError::Forbidden(format!(
                "Only {} itself or a superadmin can edit {}",
                action.application, action.name
            )));
        }
        let schema = match compiled {
            Some((schemata, bytes, schema)) => {
                self.check_application_budget(&action.application, Some(&action.name), bytes)?;
                action.schemata = schemata;
                schema
            }
            None => self
                .catalog()
                .action(&action.name)
                .map(|e| e.schema.clone())
                .ok_or_else(|| HubError::NotFound(format!("Action {id} does not exist")))?,
        };
        if retention.is_some() {
            action.retention_secs = retention;
        }
        if dedup_window.is_some() {
            action.dedup_window_secs = dedup_window;
        }
        action.edited_at = Some(self.now_ms());
        self.write_record(&self.inner.tables.actions, &action.name, &action)
            .await?;
        let view = ActionEdited {
            action: action.name.clone(),
            schemata: action.schemata.clone(),
            edited: true,
        };
        self.catalog_mut().put_action(action, schema);
        self.changed();
        Ok(view)
    }

    /// Deletes an action with its subscriptions (admin only). Events stay in the log.
    pub async fn delete_action(&self, who: &Principal, id: &str) -> HubResult<Removed> {
        if !who.is_admin() {
            return Err(HubError::Forbidden(
                "Only a superadmin can delete actions".to_owned(),
            ));
        }
        let _guard = self.inner.changes.lock().await;
        let action = self.action_record(id)?;
        if action.name == DEAD_LETTERED_ACTION {
            return Err(HubError::unprocessable(format!(
                "{DEAD_LETTERED_ACTION} is built in and cannot be removed"
            )));
        }
        let subs: Vec<String> = self
            .catalog()
            .subscriptions
            .values()
            .filter(|s| s.action == action.name)
            .map(|s| s.id.clone())
            .collect();
        let mut tx = Transaction::new();
        tx.delete(self.inner.tables.actions.clone(), action.name.clone());
        for sub in &subs {
            tx.delete(self.inner.tables.subscriptions.clone(), sub.clone());
        }
        self.remove_subscriptions(tx, &subs).await?;
        {
            let mut catalog = self.catalog_mut();
            catalog.actions.remove(&action.name);
            for sub in &subs {
                catalog.subscriptions.remove(sub);
            }
        }
        self.changed();
        Ok(Removed {
            removed: action.name,
        })
    }

    /// Checks a payload against an action's schema without publishing.
    /// `bytes`: the payload's size as sent (large ones are checked off the
    /// async workers).
    pub async fn validate_payload(
        &self,
        id: &str,
        payload: Value,
        bytes: usize,
    ) -> HubResult<Validation> {
        let (schema, action) = {
            let catalog = self.catalog();
            let entry = catalog
                .action(id)
                .ok_or_else(|| HubError::NotFound(format!("Action {id} does not exist")))?;
            (entry.schema.clone(), entry.action.name.clone())
        };
        let errors = self
            .inner
            .checker
            .violations(&schema, payload, bytes)
            .await?;
        Ok(Validation {
            action,
            valid: errors.is_empty(),
            errors,
        })
    }

    /// Registers the built-in application and the dead-letter action. Any
    /// number of processes may start together on one store: whichever
    /// stores a built-in first wins, and the others load what it stored.
    pub(crate) async fn ensure_builtins(&self) -> HubResult<()> {
        // Each round either stores what is missing or finds a record
        // another process stored meanwhile (at most two of them).
        for _ in 0..3 {
            match self.register_builtins().await {
                Err(HubError::Storage(tidings_core::Error::RecordExists { .. })) => {
                    self.reload_catalog().await?;
                }
                done => return done,
            }
        }
        self.register_builtins().await
    }

    async fn register_builtins(&self) -> HubResult<()> {
        self.ensure_builtin_application().await?;
        if self.catalog().actions.contains_key(DEAD_LETTERED_ACTION) {
            return Ok(());
        }
        let schemata = json!({
            "type": "object",
            "properties": {
                "gist": {"type": "string"},
                "event": {"type": "string"},
                "action": {"type": "string"},
                "subscription": {"type": "string"},
                "subscriber": {"type": "string"},
                "endpoint": {"type": "string"},
                "attempts": {"type": "integer"},
                "last_status_code": {"type": ["integer", "null"]},
                "last_error": {"type": ["string", "null"]},
                "published_at": {"type": "string"},
                "dead_at": {"type": "string"}
            },
            "required": ["gist", "event", "action", "subscription", "attempts"]
        });
        self.register_action(
            &Principal::System,
            NewAction {
                action: DEAD_LETTERED_ACTION.to_owned(),
                application: super::applications::BUILTIN_APPLICATION.to_owned(),
                schemata,
                retention: None,
                dedup_window: None,
            },
        )
        .await?;
        Ok(())
    }
}
