//! Registering and managing applications.

use tidings_core::{Transaction, TxOp};
pub use tidings_hub_api::{ApplicationUpdate, NewApplication, SecretRotation};

use super::{Hub, Page};
use crate::error::{HubError, HubResult};
use crate::ids::{new_api_key, new_secret, random_id};
use crate::model::Application;
use crate::model::application::{
    check_name, check_queue_patterns, check_secret, normalize_address,
};
use crate::model::secret::{Retiring, grace_period, weakness};
use crate::principal::Principal;
use crate::signature::digest;
use crate::tables::subscription_queue;
use crate::time::iso;
use crate::views::{
    ApiKeyIssued, ApplicationActivity, ApplicationView, RegisteredApplication, Removed,
    SecretRotated,
};

/// The name of the hub's own application, owner of its notices.
pub const BUILTIN_APPLICATION: &str = "tidings";

fn admin_only(who: &Principal) -> HubResult<()> {
    if who.is_admin() {
        Ok(())
    } else {
        Err(HubError::Forbidden(
            "Only a superadmin can manage applications".to_owned(),
        ))
    }
}

impl Hub {
    /// Registers an application. Returns its view with the secret and the API
    /// key, which are shown only here.
    pub async fn create_application(
        &self,
        who: &Principal,
        new: NewApplication,
    ) -> HubResult<RegisteredApplication> {
        admin_only(who)?;
        check_name(&new.application)?;
        if let Some(queues) = &new.queues {
            check_queue_patterns(queues)?;
        }
        let address = normalize_address(&new.address)?;
        let secret = match new.secret {
            Some(secret) => {
                check_secret(&secret)?;
                secret
            }
            None => new_secret(),
        };
        let warnings = secret_warnings(&secret);
        let api_key = new_api_key();
        let app = Application {
            name: new.application.clone(),
            address,
            description: new.description,
            active: true,
            secret: secret.clone(),
            previous_secret: None,
            api_key_hash: digest(&api_key),
            created_at: self.now_ms(),
            queues: new.queues,
            incarnation: random_id(),
        };
        let _guard = self.inner.changes.lock().await;
        let mut tx = Transaction::new();
        let table = &self.inner.tables.applications;
        let sealed = self
            .inner
            .config
            .sealer
            .seal_record(table.as_str(), &app.name, &app);
        tx.insert(
            table.clone(),
            app.name.clone(),
            crate::tables::encode(&sealed)?,
        );
        match self.commit(tx).await {
            Ok(_) => {}
            Err(tidings_core::Error::RecordExists { .. }) => {
                return Err(HubError::conflict(format!(
                    "Application {} already exists",
                    app.name
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let view = RegisteredApplication {
            view: app.view(),
            name: app.name.clone(),
            secret,
            apikey: api_key,
            warnings,
        };
        log_warnings(&app.name, &view.warnings);
        self.catalog_mut().put_application(app);
        self.changed();
        Ok(view)
    }

    /// Lists applications, by name, filtered by substrings of name and address.
    pub fn list_applications(
        &self,
        name: Option<&str>,
        address: Option<&str>,
        since: Option<u64>,
        page: Page,
    ) -> Vec<ApplicationView> {
        let catalog = self.catalog();
        let all: Vec<&Application> = catalog
            .applications
            .values()
            .filter(|a| name.is_none_or(|n| a.name.contains(n)))
            .filter(|a| address.is_none_or(|n| a.address.contains(n)))
            .filter(|a| since.is_none_or(|t| a.created_at >= t))
            .collect();
        page.slice(&all)
            .into_iter()
            .map(Application::view)
            .collect()
    }

    /// Whether `who` may use queue or table `name` through the queue API
    /// (the admin: any; an application: those its allow-list names).
    pub fn may_use_queue(&self, who: &Principal, name: &str) -> bool {
        match who {
            Principal::Admin | Principal::System => true,
            Principal::Application(app) => self
                .catalog()
                .applications
                .get(app)
                .is_some_and(|a| a.active && a.may_use(name)),
        }
    }

    fn application(&self, name: &str) -> HubResult<Application> {
        self.catalog()
            .applications
            .get(name)
            .cloned()
            .ok_or_else(|| HubError::NotFound(format!("Application {name} does not exist")))
    }

    async fn store_application(&self, app: Application) -> HubResult<()> {
        self.write_record(&self.inner.tables.applications, &app.name, &app)
            .await?;
        self.catalog_mut().put_application(app);
        self.changed();
        Ok(())
    }

    /// Changes an application's address or description. Subscriptions given as
    /// paths follow the new address.
    pub async fn update_application(
        &self,
        who: &Principal,
        name: &str,
        update: ApplicationUpdate,
    ) -> HubResult<ApplicationView> {
        admin_only(who)?;
        if update.address.is_none() && update.description.is_none() && update.queues.is_none() {
            return Err(HubError::BadRequest(
                "give an address, a description or queues to change".to_owned(),
            ));
        }
        if let Some(queues) = &update.queues {
            check_queue_patterns(queues)?;
        }
        let _guard = self.inner.changes.lock().await;
        let mut app = self.application(name)?;
        if let Some(address) = update.address {
            app.address = normalize_address(&address)?;
        }
        if update.description.is_some() {
            app.description = update.description;
        }
        if update.queues.is_some() {
            app.queues = update.queues;
        }
        // Path handlers are joined to the address: move them along with it.
        let moved: Vec<_> = self
            .catalog()
            .subscriptions
            .values()
            .filter(|s| s.application == app.name && s.handler.starts_with('/'))
            .cloned()
            .collect();
        let mut tx = Transaction::new();
        self.put_sealed(&mut tx, &self.inner.tables.applications, &app.name, &app)?;
        let mut updated = Vec::new();
        for mut sub in moved {
            sub.endpoint =
                crate::model::subscription::resolve_endpoint(&app.address, &sub.handler)?;
            self.put_sealed(&mut tx, &self.inner.tables.subscriptions, &sub.id, &sub)?;
            updated.push(sub);
        }
        self.commit(tx).await?;
        let view = app.view();
        {
            let mut catalog = self.catalog_mut();
            catalog.put_application(app);
            for sub in updated {
                catalog.put_subscription(sub);
            }
        }
        self.changed();
        Ok(view)
    }

    /// Activates or deactivates an application (`None`: toggles).
    pub async fn set_application_active(
        &self,
        who: &Principal,
        name: &str,
        active: Option<bool>,
    ) -> HubResult<ApplicationActivity> {
        admin_only(who)?;
        let _guard = self.inner.changes.lock().await;
        let mut app = self.application(name)?;
        app.active = active.unwrap_or(!app.active);
        let view = ApplicationActivity {
            application: app.name.clone(),
            active: app.active,
        };
        self.store_application(app).await?;
        Ok(view)
    }

    /// Replaces an application's secret (generated when not given, and
    /// then returned). The replaced one stays valid for the grace period.
    pub async fn rotate_secret(
        &self,
        who: &Principal,
        name: &str,
        rotation: SecretRotation,
    ) -> HubResult<SecretRotated> {
        if !who.may_act_as(name) {
            return Err(HubError::Forbidden(format!(
                "Only {name} itself or a superadmin can rotate its secret"
            )));
        }
        let grace = grace_period(rotation.grace_period.as_ref())?;
        let generated = rotation.secret.is_none();
        let secret = match rotation.secret {
            Some(secret) => {
                check_secret(&secret)?;
                secret
            }
            None => new_secret(),
        };
        let warnings = secret_warnings(&secret);
        let _guard = self.inner.changes.lock().await;
        let mut app = self.application(name)?;
        let old = std::mem::replace(&mut app.secret, secret);
        app.previous_secret = retiring(old, self.now_ms(), grace);
        let view = SecretRotated {
            message: "Secret updated successfully".to_owned(),
            secret: generated.then(|| app.secret.clone()),
            previous_valid_until: app.previous_secret.as_ref().map(|p| iso(p.until)),
            warnings,
        };
        let name = app.name.clone();
        self.store_application(app).await?;
        log_warnings(&name, &view.warnings);
        Ok(view)
    }

    /// Mints a new API key for an application; the old one stops working.
    pub async fn new_api_key(&self, who: &Principal, name: &str) -> HubResult<ApiKeyIssued> {
        admin_only(who)?;
        let _guard = self.inner.changes.lock().await;
        let mut app = self.application(name)?;
        let key = new_api_key();
        app.api_key_hash = digest(&key);
        let view = ApiKeyIssued {
            apikey: key,
            application: app.name.clone(),
        };
        self.store_application(app).await?;
        Ok(view)
    }

    /// Deletes an application with its actions and subscriptions (and the
    /// subscriptions to its actions, and their pending deliveries). Events stay
    /// in the log.
    pub async fn delete_application(&self, who: &Principal, name: &str) -> HubResult<Removed> {
        admin_only(who)?;
        if name == BUILTIN_APPLICATION {
            return Err(HubError::unprocessable(format!(
                "{BUILTIN_APPLICATION} is built in and cannot be removed"
            )));
        }
        let _guard = self.inner.changes.lock().await;
        self.application(name)?;
        let (actions, subs): (Vec<String>, Vec<String>) = {
            let catalog = self.catalog();
            let actions: Vec<String> = catalog
                .actions
                .values()
                .filter(|a| a.action.application == name)
                .map(|a| a.action.name.clone())
                .collect();
            let subs = catalog
                .subscriptions
                .values()
                .filter(|s| s.application == name || actions.contains(&s.action))
                .map(|s| s.id.clone())
                .collect();
            (actions, subs)
        };
        let mut tx = Transaction::new();
        tx.delete(self.inner.tables.applications.clone(), name);
        for action in &actions {
            tx.delete(self.inner.tables.actions.clone(), action.clone());
        }
        for sub in &subs {
            tx.delete(self.inner.tables.subscriptions.clone(), sub.clone());
        }
        self.remove_subscriptions(tx, &subs).await?;
        {
            let mut catalog = self.catalog_mut();
            catalog.remove_application(name);
            for action in &actions {
                catalog.actions.remove(action);
            }
            for sub in &subs {
                catalog.subscriptions.remove(sub);
            }
        }
        self.changed();
        Ok(Removed {
            removed: name.to_owned(),
        })
    }

    /// Commits `tx` and deletes the queues of `subs`, with publishes held off
    /// so that none sends to a queue being deleted.
    pub(crate) async fn remove_subscriptions(
        &self,
        tx: Transaction,
        subs: &[String],
    ) -> HubResult<()> {
        let _fanout = self.inner.fanout.write().await;
        debug_assert!(tx.ops().iter().all(|op| !matches!(op, TxOp::Send { .. })));
        self.commit(tx).await?;
        for sub in subs {
            match self
                .inner
                .broker
                .delete_queue(&subscription_queue(sub)?)
                .await
            {
                Ok(()) | Err(tidings_core::Error::QueueNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The application a principal authenticates as by API key, if active.
    pub fn application_by_api_key(&self, key: &str) -> Option<String> {
        self.application_by_api_key_digest(&digest(key))
    }

    /// The active application whose API key has this [`digest`] (what a
    /// console session keeps instead of the key).
    pub fn application_by_api_key_digest(&self, key_digest: &str) -> Option<String> {
        let catalog = self.catalog();
        let name = catalog.api_keys.get(key_digest)?;
        catalog
            .applications
            .get(name)
            .filter(|a| a.active)
            .map(|a| a.name.clone())
    }

    /// The secrets of an active application valid now (for request
    /// signatures): the current one, then the replaced one during its
    /// grace period.
    pub fn application_secrets(&self, name: &str) -> Option<Vec<String>> {
        let now = self.now_ms();
        self.catalog()
            .applications
            .get(name)
            .filter(|a| a.active)
            .map(|a| a.secrets_at(now).into_iter().map(str::to_owned).collect())
    }

    /// Creates the built-in application if it is missing.
    pub(crate) async fn ensure_builtin_application(&self) -> HubResult<()> {
        if self
            .catalog()
            .applications
            .contains_key(BUILTIN_APPLICATION)
        {
            return Ok(());
        }
        let app = Application {
            name: BUILTIN_APPLICATION.to_owned(),
            address: "http://127.0.0.1/".to_owned(),
            description: Some("Tidings itself: owner of the hub's notices".to_owned()),
            active: true,
            secret: new_secret(),
            previous_secret: None,
            api_key_hash: digest(&new_api_key()),
            created_at: self.now_ms(),
            queues: None,
            incarnation: random_id(),
        };
        // Inserted only if absent: a process starting at the same moment
        // may have stored it first (then `ensure_builtins` loads it).
        let sealed = self.inner.config.sealer.seal_record(
            self.inner.tables.applications.as_str(),
            &app.name,
            &app,
        );
        let mut tx = tidings_core::Transaction::new();
        tx.insert(
            self.inner.tables.applications.clone(),
            app.name.clone(),
            crate::tables::encode(&sealed)?,
        );
        self.commit(tx).await?;
        self.catalog_mut().put_application(app);
        self.changed();
        Ok(())
    }
}

/// What a rotation keeps of the replaced secret: it, until `now + grace`
/// (nothing for no grace).
pub(crate) fn retiring(old: String, now: u64, grace: std::time::Duration) -> Option<Retiring> {
    let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    (grace_ms > 0).then(|| Retiring {
        secret: old,
        until: now.saturating_add(grace_ms),
    })
}

/// The warnings a secret earns.
fn secret_warnings(secret: &str) -> Vec<String> {
    weakness(secret).into_iter().collect()
}

/// Logs the warnings an application's change earned.
fn log_warnings(application: &str, warnings: &[String]) {
    for warning in warnings {
        tracing::warn!(application, "{warning}");
    }
}
