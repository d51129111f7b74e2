//! Publishing events and reading the event log.

use std::time::Duration;
pub use tidings_hub_api::NewEvent;

use serde_json::value::RawValue;
use serde_json::{Value, json};
use tidings_core::{OutgoingMessage, Payload, RecordScan, Transaction};

use super::{Hub, Page};
use crate::error::{HubError, HubResult};
use crate::ids::{event_id, row_key_at};
use crate::model::{Event, Gist, Subscription};
use crate::principal::Principal;
use crate::tables::{deduper_key, encode, get, page, put, subscription_queue};
use crate::views::EventView;

/// Longest `deduper`, in bytes.
pub const MAX_DEDUPER_BYTES: usize = 256;

/// Longest delay a publisher may ask for: a year.
pub const MAX_SLEEP_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// The outcome of a publish.
#[derive(Debug)]
pub struct Published {
    /// The event as the API shows it (with `fanout`, or `duplicate`).
    pub view: EventView,
    /// Whether it repeated an earlier event's deduper.
    pub duplicate: bool,
}

/// `GET /v1/events` filters.
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    /// Exact event id.
    pub id: Option<String>,
    /// Substring of the action name.
    pub action: Option<String>,
    /// Exact deduper.
    pub deduper: Option<String>,
    /// The application whose actions published them.
    pub application: Option<String>,
    /// Published at or after (ms).
    pub from: Option<u64>,
    /// Published before (ms).
    pub to: Option<u64>,
}

/// A payload given as a string holding JSON is the JSON it holds.
/// Either way, an object of it with a key twice is refused: the schema
/// would check one reading of it and receivers might take another.
fn unwrap_json_string(field: &str, raw: Box<RawValue>) -> HubResult<Box<RawValue>> {
    let raw = if raw.get().trim_start().starts_with('"') {
        let text: String = serde_json::from_str(raw.get())
            .map_err(|e| HubError::BadRequest(format!("{field} - {e}")))?;
        RawValue::from_string(text.trim().to_owned()).map_err(|e| {
            HubError::BadRequest(format!("{field} - a string must hold valid JSON: {e}"))
        })?
    } else {
        raw
    };
    match crate::json::duplicate_key(raw.get()) {
        Some(key) => Err(HubError::BadRequest(format!(
            "{field} - the key {key:?} appears twice in one object"
        ))),
        None => Ok(raw),
    }
}

/// A publication's input, checked: everything but what needs the catalog.
struct Input {
    action: String,
    payload: Box<RawValue>,
    value: Value,
    metadata: Box<RawValue>,
    deduper: Option<String>,
    delay: Option<Duration>,
    /// The deduper came as an `Idempotency-Key`: a repeat must carry the
    /// same payload.
    strict: bool,
}

impl Input {
    fn check(new: NewEvent) -> HubResult<Self> {
        let payload = unwrap_json_string("payload", new.payload)?;
        let empty = || {
            RawValue::from_string("{}".to_owned()).map_err(|e| HubError::BadRequest(e.to_string()))
        };
        let metadata = match new.metadata {
            None => empty()?,
            Some(raw) if raw.get().trim() == "null" => empty()?,
            Some(raw) => unwrap_json_string("metadata", raw)?,
        };
        if !metadata.get().trim_start().starts_with('{') {
            return Err(HubError::BadRequest(
                "metadata - Input should be an object".to_owned(),
            ));
        }
        let strict = new.idempotency_key.is_some();
        let deduper = match (new.deduper, new.idempotency_key) {
            (Some(deduper), Some(key)) if deduper != key => {
                return Err(HubError::BadRequest(
                    "deduper - differs from the Idempotency-Key header: give one, or both the same"
                        .to_owned(),
                ));
            }
            (deduper, key) => key.or(deduper),
        };
        if let Some(deduper) = &deduper
            && (deduper.is_empty() || deduper.len() > MAX_DEDUPER_BYTES)
        {
            return Err(HubError::BadRequest(format!(
                "deduper - the deduper or Idempotency-Key must be 1 to {MAX_DEDUPER_BYTES} bytes long"
            )));
        }
        let delay = match new.sleep_until {
            Some(secs) if !(0.0..=MAX_SLEEP_SECS).contains(&secs) => {
                return Err(HubError::BadRequest(
                    "sleep_until - must be a number of seconds from 0 to one year".to_owned(),
                ));
            }
            Some(secs) if secs > 0.0 => Some(Duration::from_secs_f64(secs)),
            _ => None,
        };
        let value: Value = serde_json::from_str(payload.get())
            .map_err(|e| HubError::BadRequest(format!("payload - {e}")))?;
        Ok(Self {
            action: new.action,
            payload,
            value,
            metadata,
            deduper,
            delay,
            strict,
        })
    }
}

impl Hub {
    /// Publishes an event: checks it against the action's schema, stores it and
    /// queues a delivery for every active subscription, in one transaction.
    pub async fn publish(
        &self,
        who: &Principal,
        new: NewEvent,
        traceparent: Option<String>,
    ) -> HubResult<Published> {
        let mut input = Input::check(new)?;
        let (schema, action, mut subs, dedup_window) = match self.resolve(who, &input.action) {
            // An action (or its application) made through another process
            // moments ago, not heard of here yet: read them from the store.
            Err(HubError::Unprocessable { .. }) => {
                self.refresh_action(&input.action).await?;
                self.resolve(who, &input.action)?
            }
            resolved => resolved?,
        };
        let value = if input.strict {
            input.value.clone()
        } else {
            std::mem::take(&mut input.value)
        };
        let errors = self
            .inner
            .checker
            .violations(&schema, value, input.payload.get().len())
            .await?;
        if !errors.is_empty() {
            return Err(HubError::SchemaViolation {
                message: format!("Event payload does not conform to {action} schema"),
                errors,
            });
        }
        let now = self.now_ms();
        let row = self.inner.rows.next(now);
        let deliver_at = input.delay.map_or(now, |d| now + d.as_millis() as u64);
        let mut event = Event {
            id: event_id(row),
            row,
            action: action.clone(),
            payload: input.payload,
            metadata: input.metadata,
            deduper: input.deduper.clone(),
            publisher: who.label(),
            traceparent,
            deliver_at,
            fanout: subs.len() as u32,
        };
        let mut looked_again = false;
        let committed = loop {
            let tx = self.publication(&event, &subs, input.delay, now, dedup_window)?;
            let committed = {
                let _fanout = self.inner.fanout.read().await;
                self.inner.broker.commit(tx).await
            };
            match committed {
                // A subscription another process removed, not heard of here
                // yet: read the action and its subscriptions again (the
                // action may be gone too) and publish once more.
                Err(tidings_core::Error::QueueNotFound(_)) if !looked_again => {
                    looked_again = true;
                    self.refresh_publication(&action, &subs).await?;
                    subs = self.resolve(who, &action)?.2;
                    event.fanout = subs.len() as u32;
                }
                other => break other,
            }
        };
        match committed {
            Ok(_) => {
                self.inner.metrics.published(&action);
                let view = EventView {
                    fanout: Some(event.fanout),
                    ..event.view()
                };
                Ok(Published {
                    view,
                    duplicate: false,
                })
            }
            Err(tidings_core::Error::RecordExists { .. }) => {
                let deduper = input.deduper.unwrap_or_default();
                let original = self.duplicate_of(&action, &deduper).await?;
                let same = serde_json::from_str::<Value>(original.view.payload.get())
                    .is_ok_and(|payload| payload == input.value);
                if input.strict && !same {
                    return Err(HubError::conflict(format!(
                        "Idempotency-Key {deduper:?} was used for another {action} event with a \
                         different payload ({})",
                        original.view.event
                    )));
                }
                Ok(original)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The action by name, if its application is active and `who` may
    /// publish it: its schema, its name and the subscriptions to deliver it to.
    fn resolve(
        &self,
        who: &Principal,
        action: &str,
    ) -> HubResult<(crate::schema::Schema, String, Vec<Subscription>, Duration)> {
        let catalog = self.catalog();
        let entry = catalog
            .actions
            .get(action)
            .filter(|e| {
                catalog
                    .applications
                    .get(&e.action.application)
                    .is_some_and(|a| a.active)
            })
            .ok_or_else(|| {
                HubError::unprocessable("Action can not be used to process any events")
            })?;
        if !who.may_act_as(&entry.action.application) {
            return Err(HubError::Forbidden(format!(
                "Not authorized to publish {}",
                entry.action.name
            )));
        }
        let subs = catalog
            .deliverable(&entry.action.name)
            .into_iter()
            .cloned()
            .collect();
        let window = self.dedup_window_of(&entry.action);
        Ok((
            entry.schema.clone(),
            entry.action.name.clone(),
            subs,
            window,
        ))
    }

    /// The transaction that publishes `event`: its deduper (if any), the
    /// event, and a gist and a queued delivery per subscription.
    fn publication(
        &self,
        event: &Event,
        subs: &[Subscription],
        delay: Option<Duration>,
        now: u64,
        dedup_window: Duration,
    ) -> HubResult<Transaction> {
        let tables = &self.inner.tables;
        let mut tx = Transaction::new();
        if let Some(deduper) = &event.deduper {
            let key = deduper_key(&event.action, deduper);
            tx.insert(
                tables.dedupers.clone(),
                key.clone(),
                encode(&json!({"event": event.id}))?,
            );
            let window = u64::try_from(dedup_window.as_millis()).unwrap_or(u64::MAX);
            put(
                &mut tx,
                &tables.expiring_dedupers,
                super::retention::expiring_key(now.saturating_add(window), &event.id),
                &super::retention::ExpiringDeduper {
                    deduper: key,
                    event: event.id.clone(),
                },
            )?;
        }
        put(&mut tx, &tables.events, event.id.clone(), event)?;
        put(
            &mut tx,
            &tables.events_by_action,
            super::retention::by_action_key(&event.action, &event.id),
            &(),
        )?;
        crate::indexes::count_event(&mut tx, tables, &event.action, 1);
        let message_payload = Payload::from_value(&event.id)?;
        for sub in subs {
            let gist = Gist::pending(&event.id, &event.action, sub, Some(event.deliver_at), now);
            crate::indexes::write_gist(&mut tx, tables, crate::indexes::Before::New, &gist)?;
            let mut message = OutgoingMessage::new(message_payload.clone());
            message.delay = delay;
            tx.send(subscription_queue(&sub.id)?, message);
        }
        Ok(tx)
    }

    async fn duplicate_of(&self, action: &str, deduper: &str) -> HubResult<Published> {
        let tables = &self.inner.tables;
        let original: Option<Value> = get(
            &**self.broker(),
            &tables.dedupers,
            &deduper_key(action, deduper),
        )
        .await?;
        let id = original
            .as_ref()
            .and_then(|v| v["event"].as_str())
            .unwrap_or_default()
            .to_owned();
        let event: Event = get(&**self.broker(), &tables.events, &id)
            .await?
            .ok_or_else(|| HubError::NotFound(format!("Event {id} does not exist")))?;
        let view = EventView {
            duplicate: true,
            ..event.view()
        };
        Ok(Published {
            view,
            duplicate: true,
        })
    }

    /// The actions whose events `who` may read: those of the applications
    /// it may act as and those it subscribes to (`None`: every action, for
    /// the admin).
    fn readable_actions(&self, who: &Principal) -> Option<std::collections::HashSet<String>> {
        let Principal::Application(app) = who else {
            return None;
        };
        let catalog = self.catalog();
        let owned = catalog
            .actions
            .values()
            .filter(|e| &e.action.application == app)
            .map(|e| e.action.name.clone());
        let subscribed = catalog
            .subscriptions
            .values()
            .filter(|s| &s.application == app)
            .map(|s| s.action.clone());
        Some(owned.chain(subscribed).collect())
    }

    /// One event, if `who` may read it (otherwise, as one that does not
    /// exist: 404).
    pub async fn event_for(&self, who: &Principal, id: &str) -> HubResult<Event> {
        let event = self.event(id).await?;
        match self.readable_actions(who) {
            Some(actions) if !actions.contains(&event.action) => {
                Err(HubError::NotFound(format!("Event {id} does not exist")))
            }
            _ => Ok(event),
        }
    }

    /// One event.
    pub async fn event(&self, id: &str) -> HubResult<Event> {
        if crate::ids::parse_event_row(id).is_none() {
            return Err(HubError::NotFound(format!("Event {id} does not exist")));
        }
        get(&**self.broker(), &self.inner.tables.events, id)
            .await?
            .ok_or_else(|| HubError::NotFound(self.missing_event(id)))
    }

    /// The event log, newest first: the events `who` may read (an
    /// application: of the actions it owns or subscribes to).
    pub async fn list_events(
        &self,
        who: &Principal,
        filter: &EventFilter,
        page_of: Page,
    ) -> HubResult<Vec<Event>> {
        if let Some(id) = &filter.id {
            return Ok(match self.event_for(who, id).await {
                Ok(event) if page_of.page == 1 => vec![event],
                Ok(_) | Err(HubError::NotFound(_)) => Vec::new(),
                Err(e) => return Err(e),
            });
        }
        let mut allowed = self.readable_actions(who);
        if let Some(app) = &filter.application {
            let owned: std::collections::HashSet<String> = self
                .catalog()
                .actions
                .values()
                .filter(|e| &e.action.application == app)
                .map(|e| e.action.name.clone())
                .collect();
            allowed = Some(match allowed {
                Some(readable) => readable.intersection(&owned).cloned().collect(),
                None => owned,
            });
        }
        if let Some(deduper) = &filter.deduper {
            return self
                .events_by_deduper(deduper, allowed.as_ref(), filter, page_of)
                .await;
        }
        if filter.action.is_some() || allowed.is_some() {
            let needle = filter.action.as_deref().unwrap_or_default();
            return self
                .events_of_actions(needle, allowed.as_ref(), filter, page_of)
                .await;
        }
        let mut range = RecordScan::all().reverse();
        if let Some(from) = filter.from {
            range = range.from(row_key_at(from));
        }
        if let Some(to) = filter.to {
            range = range.to(row_key_at(to));
        }
        let (events, _) = page(
            &**self.broker(),
            &self.inner.tables.events,
            range,
            |_: &Event| true,
            page_of.skip(),
            page_of.size,
            false,
        )
        .await?;
        Ok(events)
    }

    /// The events with `deduper` (one per action at most), from the
    /// deduper records of the actions allowed: one read per action.
    async fn events_by_deduper(
        &self,
        deduper: &str,
        allowed: Option<&std::collections::HashSet<String>>,
        filter: &EventFilter,
        page_of: Page,
    ) -> HubResult<Vec<Event>> {
        let tables = &self.inner.tables;
        let broker = &**self.broker();
        let needle = filter.action.as_deref().unwrap_or_default();
        let mut events = Vec::new();
        for action in self.indexed_actions().await? {
            if !action.contains(needle) || allowed.is_some_and(|a| !a.contains(&action)) {
                continue;
            }
            let record: Option<Value> =
                get(broker, &tables.dedupers, &deduper_key(&action, deduper)).await?;
            let Some(id) = record.as_ref().and_then(|r| r["event"].as_str()) else {
                continue;
            };
            if let Some(event) = get::<Event>(broker, &tables.events, id).await?
                && filter.from.is_none_or(|t| event.published_at() >= t)
                && filter.to.is_none_or(|t| event.published_at() < t)
            {
                events.push(event);
            }
        }
        events.sort_unstable_by(|a, b| b.id.cmp(&a.id));
        Ok(events
            .into_iter()
            .skip(page_of.skip())
            .take(page_of.size)
            .collect())
    }

    /// The events of the actions whose names contain `needle`, newest
    /// first, read from `hub.events_by_action`: per action, at most the
    /// entries the page needs, so the cost does not grow with the log.
    async fn events_of_actions(
        &self,
        needle: &str,
        readable: Option<&std::collections::HashSet<String>>,
        filter: &EventFilter,
        page_of: Page,
    ) -> HubResult<Vec<Event>> {
        use super::retention::by_action_key;
        let tables = &self.inner.tables;
        let broker = &**self.broker();
        let wanted = page_of.skip().saturating_add(page_of.size);
        let mut ids = Vec::new();
        for action in self.indexed_actions().await? {
            if !action.contains(needle) || readable.is_some_and(|r| !r.contains(&action)) {
                continue;
            }
            let from = filter.from.map_or_else(
                || format!("{action}\n"),
                |t| by_action_key(&action, &row_key_at(t)),
            );
            let to = filter.to.map_or_else(
                || format!("{action}\u{b}"),
                |t| by_action_key(&action, &row_key_at(t)),
            );
            let range = RecordScan::all().from(from).to(to).reverse().limit(wanted);
            for record in broker.scan_records(&tables.events_by_action, range).await? {
                if let Some(id) = record.key.rsplit('\n').next() {
                    ids.push(id.to_owned());
                }
            }
        }
        // Ids sort by publish time.
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let mut events = Vec::with_capacity(page_of.size);
        for id in ids.into_iter().skip(page_of.skip()).take(page_of.size) {
            // Gone meanwhile (retention): left out.
            if let Some(event) = get::<Event>(broker, &tables.events, &id).await? {
                events.push(event);
            }
        }
        Ok(events)
    }
}
