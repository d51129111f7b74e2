//! A subscription's deliveries: receive as many as lanes are free, post
//! each, settle each (an unordered subscription's lane is free again once
//! the webhook answered).

use crate::model::secret::SigningKeys;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tidings_core::{ConsumerName, Delivery, Nack, ReceiveOptions, Transaction};
use tidings_patterns::lease::Lease;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::schedule::{jitter_unit, retry_delay};
use super::webhook::{Attempt, Outcome, post};
use crate::error::{HubError, HubResult};
use crate::hub::NewEvent;
use crate::hub::actions::DEAD_LETTERED_ACTION;
use crate::indexes::{Before, StoredGist, read_gist, write_gist};
use crate::model::{Event, Gist, GistStatus, Subscription};
use crate::principal::Principal;
use crate::tables::{decode, subscription_queue};
use crate::time::iso;
use crate::views::Replayed;

/// How long a receive waits before the lane checks whether it should stop.
const RECEIVE_WAIT: Duration = Duration::from_secs(5);
/// Pause after a broker error, so a failing store is not hammered.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// How long a delivery to an inactive subscriber waits before it is looked
/// at again (no attempt is made or counted meanwhile).
pub(crate) const INACTIVE_RETRY: Duration = Duration::from_secs(10);
/// How long a busy subscription's receive waits for more lanes to come free.
const LINGER: Duration = Duration::from_millis(1);
/// Outcomes of an unordered subscription being written at once, per lane.
const SETTLING_PER_LANE: usize = 4;

/// A delivery's lane, held while it is attempted. An unordered
/// subscription's lane is given back as soon as the webhook answered, and
/// the outcome is written holding a place among the subscription's
/// settlements instead: writing outcomes shares commits, which is cheaper
/// the more wait together, and posts need not wait for it. An ordered
/// subscription's lane is held until the outcome is written (and its
/// retry delay waited out).
struct Lane {
    held: Option<OwnedSemaphorePermit>,
    /// Places of the subscription's settlements (`None`: ordered).
    settling: Option<Arc<Semaphore>>,
    settlement: Option<OwnedSemaphorePermit>,
}

impl Lane {
    /// The webhook answered: trades the lane for a place among the
    /// settlements (unordered subscriptions).
    async fn answered(&mut self) {
        if let Some(settling) = &self.settling
            && let Ok(place) = settling.clone().acquire_owned().await
        {
            self.settlement = Some(place);
            self.held = None;
        }
    }
}

/// Delivers a subscription until `halted`: an unordered one at once; an
/// ordered one while this process holds its lease.
pub(super) async fn subscription(
    shared: Arc<Shared>,
    sub_id: String,
    ordered: bool,
    lanes: usize,
    halted: CancellationToken,
) {
    if !ordered {
        return deliver(&shared, &sub_id, false, lanes, halted).await;
    }
    let hub = &shared.hub;
    let lease = Lease::new(
        hub.broker().clone(),
        hub.inner.tables.leases.clone(),
        &sub_id,
        hub.process_id(),
        shared.config.lease_ttl,
    );
    lease
        .run_while_held(&halted, |_, holding| {
            deliver(&shared, &sub_id, true, lanes, holding)
        })
        .await;
}

/// Receives, posts and settles the subscription's deliveries until `halted`;
/// lets the attempts under way finish.
async fn deliver(
    shared: &Arc<Shared>,
    sub_id: &str,
    ordered: bool,
    lanes: usize,
    halted: CancellationToken,
) {
    let hub = &shared.hub;
    let tables = &hub.inner.tables;
    let Ok(queue) = subscription_queue(sub_id) else {
        return;
    };
    let Ok(consumer) = ConsumerName::new(crate::hub::member_name(hub.process_id())) else {
        return;
    };
    if ordered && wait_for_deliveries_in_flight(hub, &queue, &halted).await {
        return;
    }
    // A lane is a permit: a receive takes as many deliveries as lanes are
    // free, and each attempt holds its lane until the webhook answered (see
    // `Lane`; in an ordered subscription, until it is settled and its retry
    // delay waited out).
    let free = Arc::new(Semaphore::new(lanes.max(1)));
    let settling = (!ordered).then(|| Arc::new(Semaphore::new(lanes.max(1) * SETTLING_PER_LANE)));
    let mut attempts = JoinSet::new();
    loop {
        while attempts.try_join_next().is_some() {}
        if halted.is_cancelled() {
            break;
        }
        // While the endpoint's breaker is open, wait rather than take work.
        let endpoint = hub.subscription(sub_id).map(|s| s.endpoint);
        if let Ok(endpoint) = endpoint
            && let Err(rejected) = shared.breaker(&endpoint).ready()
        {
            if pause(&halted, rejected.retry_after).await {
                break;
            }
            continue;
        }
        let first = tokio::select! {
            permit = free.clone().acquire_owned() => permit,
            () = halted.cancelled() => break,
        };
        let Ok(first) = first else {
            break;
        };
        let mut permits = vec![first];
        while let Ok(permit) = free.clone().try_acquire_owned() {
            permits.push(permit);
        }
        // Busy (attempts under way, most lanes taken): lanes come free
        // one by one, so wait a moment for more, for one receive of many
        // rather than many of one.
        if !attempts.is_empty() && permits.len() < lanes.div_ceil(2) {
            let linger = tokio::time::sleep(LINGER);
            tokio::pin!(linger);
            while permits.len() < lanes.div_ceil(2) {
                tokio::select! {
                    permit = free.clone().acquire_owned() => match permit {
                        Ok(permit) => permits.push(permit),
                        Err(_) => break,
                    },
                    () = &mut linger => break,
                }
            }
        }
        let options = ReceiveOptions::new(permits.len(), RECEIVE_WAIT);
        let received = tokio::select! {
            r = hub.broker().receive(&queue, &tables.group, &consumer, options) => r,
            () = halted.cancelled() => break,
        };
        let deliveries = match received {
            Ok(d) => d,
            Err(tidings_core::Error::QueueNotFound(_)) => break,
            Err(e) => {
                tracing::warn!(subscription = %sub_id, error = %e, "receive failed");
                drop(permits);
                if pause(&halted, ERROR_PAUSE).await {
                    break;
                }
                continue;
            }
        };
        // Lanes left without a delivery go back with the unused permits.
        for (delivery, permit) in deliveries.into_iter().zip(permits) {
            let (shared, sub_id, halted) = (shared.clone(), sub_id.to_owned(), halted.clone());
            let mut lane = Lane {
                held: Some(permit),
                settling: settling.clone(),
                settlement: None,
            };
            attempts.spawn(async move {
                let wait = match attempt(&shared, &sub_id, &delivery, &mut lane).await {
                    Ok(wait) => wait,
                    Err(e) => {
                        tracing::warn!(subscription = %sub_id, error = %e, "delivery could not be settled");
                        Some(ERROR_PAUSE)
                    }
                };
                if let Some(wait) = wait.filter(|_| ordered) {
                    pause(&halted, wait).await;
                }
                drop(lane);
            });
        }
    }
    // Attempts under way finish (their outcome is recorded).
    while attempts.join_next().await.is_some() {}
}

/// Before an ordered subscription is delivered by this process: waits until
/// every delivery still held by a consumer (one left in flight by a process
/// that died or lost the lease) has come back to the group, so that a
/// receive hands it out before anything published after it
/// ([`in_flight_wait`](tidings_patterns::lease::in_flight_wait)). Returns
/// true if `halted` came first.
async fn wait_for_deliveries_in_flight(
    hub: &crate::hub::Hub,
    queue: &tidings_core::QueueName,
    halted: &CancellationToken,
) -> bool {
    loop {
        match tidings_patterns::lease::in_flight_wait(
            &**hub.broker(),
            queue,
            &hub.inner.tables.group,
        )
        .await
        {
            Ok(Duration::ZERO) => return false,
            Ok(wait) => {
                tracing::info!(%queue, ?wait, "ordered subscription taken over with deliveries in flight; waiting for them to come back");
                return pause(halted, wait).await;
            }
            Err(e) => {
                tracing::warn!(%queue, error = %e, "cannot tell what the ordered subscription has in flight; asking again");
                if pause(halted, ERROR_PAUSE).await {
                    return true;
                }
            }
        }
    }
}

/// Sleeps unless halted first; returns whether it was halted.
async fn pause(halted: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => halted.is_cancelled(),
        () = halted.cancelled() => true,
    }
}

/// What an attempt works on, once found.
struct Work {
    sub: Subscription,
    event: Event,
    gist: Gist,
    /// The gist as stored before this attempt (`None`: not stored yet).
    stored: Option<StoredGist>,
    /// What to sign with; `None` if the subscriber is inactive or gone.
    keys: Option<SigningKeys>,
}

/// Posts one delivery and settles it. Returns the retry delay if it failed
/// and will be tried again.
async fn attempt(
    shared: &Shared,
    sub_id: &str,
    delivery: &Delivery,
    lane: &mut Lane,
) -> HubResult<Option<Duration>> {
    let hub = &shared.hub;
    let Some(mut work) = prepare(shared, sub_id, delivery).await? else {
        return Ok(None);
    };
    let Some(keys) = work.keys.take() else {
        // The subscriber is inactive (or gone): no attempt, and the
        // delivery waits its turn again instead of staying in flight.
        return give_back(hub, delivery, INACTIVE_RETRY).await;
    };
    let breaker = shared.breaker(&work.sub.endpoint);
    if let Err(rejected) = breaker.permit() {
        // Given back without an attempt: it does not count.
        hub.metrics().attempt("deferred");
        return give_back(hub, delivery, rejected.retry_after).await;
    }
    // Attempts are counted in the gist, so a delivery handed back by the
    // breaker, or lost in a crash before its outcome was written, is not one.
    let number = work.gist.attempts + 1;
    let outcome = {
        let _permit = shared.global.acquire().await;
        post(
            &shared.client,
            shared.hub.destinations(),
            Attempt {
                endpoint: &work.sub.endpoint,
                keys: &keys,
                event: &work.event,
                delivery_id: &work.gist.key(),
                number,
                replay: false,
            },
        )
        .await
    };
    if outcome.endpoint_failed() {
        breaker.record_failure();
    } else if !outcome.refused {
        breaker.record_success();
    }
    lane.answered().await;
    hub.metrics()
        .attempt_duration
        .observe(outcome.elapsed.as_secs_f64());
    record(
        &mut work.gist,
        &outcome,
        (number, false),
        &work.event,
        hub.now_ms(),
    );
    conclude(hub, delivery, work, &outcome, number).await
}

/// Finds the subscription, the event and its gist (new if none), and the
/// subscriber's secret. `None`: nothing to
/// attempt (the message is not an event id, or its event is gone: acked;
/// or the subscription is gone).
async fn prepare(shared: &Shared, sub_id: &str, delivery: &Delivery) -> HubResult<Option<Work>> {
    let hub = &shared.hub;
    let tables = &hub.inner.tables;
    let drop_it = |why: &'static str| async move {
        tracing::info!(subscription = %sub_id, why, "delivery dropped");
        let ids = std::slice::from_ref(&delivery.id);
        hub.broker()
            .ack(&delivery.queue, &tables.group, ids)
            .await?;
        HubResult::Ok(None)
    };
    let Ok(event_id) = delivery.payload.json::<String>() else {
        return drop_it("its message is not an event id").await;
    };
    let Ok(sub) = hub.subscription(sub_id) else {
        return Ok(None);
    };
    // The event (stored under its id) and its gist, read together.
    let gist_key = crate::model::gist::key(&event_id, &sub.id);
    let read = [
        (tables.events.clone(), event_id),
        (tables.gists.clone(), gist_key),
    ];
    let mut found = hub.broker().get_records(&read).await?.into_iter();
    let (Some(event), gist) = (found.next().flatten(), found.next().flatten()) else {
        return drop_it("its event no longer exists").await;
    };
    let event: Event = decode(&tables.events, &read[0].1, &event)?;
    let stored = gist
        .map(|raw| StoredGist::decode(tables, &read[1].1, raw))
        .transpose()?;
    if stored
        .as_ref()
        .is_some_and(|s| s.gist.status == GistStatus::Delivered)
    {
        return drop_it("it was delivered meanwhile (a replay)").await;
    }
    let gist = stored.as_ref().map_or_else(
        || Gist::pending(&event.id, &event.action, &sub, None, hub.now_ms()),
        |s| s.gist.clone(),
    );
    let keys = hub.signing_keys(&sub);
    Ok(Some(Work {
        sub,
        event,
        gist,
        stored,
        keys,
    }))
}

/// Gives a delivery back unattempted, to be looked at again after `delay`.
async fn give_back(
    hub: &crate::hub::Hub,
    delivery: &Delivery,
    delay: Duration,
) -> HubResult<Option<Duration>> {
    let group = &hub.inner.tables.group;
    hub.broker()
        .nack(&delivery.queue, group, &delivery.id, Nack::Retry { delay })
        .await?;
    Ok(Some(delay))
}

/// Settles an attempt by its outcome: delivered (acked), dead-lettered
/// (after the last attempt, or a 410 that disables the subscription), or
/// retried after the schedule's delay (or a longer `Retry-After`).
async fn conclude(
    hub: &crate::hub::Hub,
    delivery: &Delivery,
    work: Work,
    outcome: &Outcome,
    number: u32,
) -> HubResult<Option<Duration>> {
    let Work {
        sub,
        event,
        mut gist,
        stored,
        ..
    } = work;
    let before = stored.as_ref().map_or(Before::Absent, Before::Stored);
    if outcome.delivered() {
        gist.status = GistStatus::Delivered;
        gist.delivered_at = Some(hub.now_ms());
        gist.next_attempt_at = None;
        settle(hub, delivery, before, &gist, None).await?;
        hub.metrics().attempt("delivered");
        if let Some(ms) = gist.latency_ms {
            hub.metrics().delivered_after(ms);
        }
        return Ok(None);
    }
    let gone = outcome.gone();
    if gone {
        hub.disable_gone(&sub.id, "the endpoint answered 410 Gone".to_owned())
            .await?;
    }
    if gone || outcome.refused || number >= sub.max_retries {
        let reason = if gone {
            "410 Gone: subscription disabled".to_owned()
        } else if let Some(refusal) = outcome.error.as_ref().filter(|_| outcome.refused) {
            refusal.clone()
        } else {
            format!(
                "{number} attempts failed; last: {}",
                gist.last_error.as_deref().unwrap_or("unknown")
            )
        };
        gist.status = GistStatus::Failed;
        gist.dead_at = Some(hub.now_ms());
        gist.next_attempt_at = None;
        settle(
            hub,
            delivery,
            before,
            &gist,
            Some(Nack::DeadLetter { reason }),
        )
        .await?;
        hub.metrics().attempt("dead_lettered");
        notify_dead_letter(hub, &gist, &event).await;
        return Ok(None);
    }
    let mut delay = retry_delay(number, sub.retry_schedule.as_deref(), jitter_unit());
    if let Some(asked) = outcome.retry_after {
        delay = delay.max(asked);
    }
    hub.metrics().attempt("retrying");
    gist.status = GistStatus::Retrying;
    gist.next_attempt_at = Some(hub.now_ms() + delay.as_millis() as u64);
    settle(hub, delivery, before, &gist, Some(Nack::Retry { delay })).await?;
    Ok(Some(delay))
}

/// Writes the gist of an attempt (over `before`) and the delivery's next
/// step (an ack, or `nack`) in one transaction: a crash leaves both as they
/// were, or both changed.
async fn settle(
    hub: &crate::hub::Hub,
    delivery: &Delivery,
    before: Before<'_>,
    gist: &Gist,
    nack: Option<Nack>,
) -> HubResult<()> {
    let tables = &hub.inner.tables;
    let (queue, group, id) = (&delivery.queue, &tables.group, &delivery.id);
    let mut tx = Transaction::new();
    match nack {
        None => tx.ack(queue.clone(), group.clone(), [id.clone()]),
        Some(nack) => tx.nack(queue.clone(), group.clone(), id.clone(), nack),
    };
    write_gist(&mut tx, tables, before, gist)?;
    match hub.broker().commit(tx).await {
        // Redelivered meanwhile (visibility timeout): the other attempt settles it.
        Ok(_) | Err(tidings_core::Error::NotPending { .. }) => Ok(()),
        // The gist changed since it was read (a replay or requeue wrote it):
        // this attempt is not recorded, and the delivery is looked at again
        // from what is stored now.
        Err(tidings_core::Error::RecordChanged { .. }) => {
            tracing::info!(gist = %gist.key(), "the delivery record changed during an attempt; looked at again");
            match hub
                .broker()
                .nack(
                    queue,
                    group,
                    id,
                    Nack::Retry {
                        delay: Duration::ZERO,
                    },
                )
                .await
            {
                Ok(_) | Err(tidings_core::Error::NotPending { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn record(
    gist: &mut Gist,
    outcome: &Outcome,
    (number, replay): (u32, bool),
    event: &Event,
    now: u64,
) {
    let started = now.saturating_sub(outcome.elapsed.as_millis() as u64);
    gist.remember(crate::model::gist::AttemptRecord {
        number,
        at: started,
        ms: outcome.elapsed.as_millis() as u64,
        status: outcome.status.unwrap_or(0),
        error: outcome.error.clone(),
        refused: outcome.refused,
        replay,
    });
    gist.attempts = gist.attempts.max(number);
    gist.last_status_code = Some(outcome.status.unwrap_or(0));
    gist.last_error.clone_from(&outcome.error);
    gist.refused = outcome.refused;
    gist.last_ms = Some(outcome.elapsed.as_millis() as u64);
    gist.last_attempted_at = Some(started);
    if outcome.delivered() {
        gist.latency_ms = Some(now.saturating_sub(event.deliver_at.max(event.published_at())));
    }
}

/// Publishes `tidings.delivery.dead_lettered` (never about itself).
async fn notify_dead_letter(hub: &crate::hub::Hub, gist: &Gist, event: &Event) {
    if event.action == DEAD_LETTERED_ACTION {
        return;
    }
    let payload = json!({
        "gist": gist.key(),
        "event": gist.event,
        "action": gist.action,
        "subscription": gist.subscription,
        "subscriber": gist.subscriber,
        "endpoint": gist.endpoint,
        "attempts": gist.attempts,
        "last_status_code": gist.last_status_code,
        "last_error": gist.shown_error(false),
        "published_at": iso(event.published_at()),
        "dead_at": gist.dead_at.map(iso),
    });
    let notice = serde_json::value::to_raw_value(&payload).map(|payload| NewEvent {
        action: DEAD_LETTERED_ACTION.to_owned(),
        payload,
        metadata: Some(event.metadata.clone()),
        deduper: Some(format!(
            "dead-letter:{}:{}",
            gist.key(),
            gist.dead_at.unwrap_or(0)
        )),
        sleep_until: None,
        idempotency_key: None,
    });
    let result = match notice {
        Ok(notice) => {
            hub.publish(&Principal::System, notice, event.traceparent.clone())
                .await
        }
        Err(e) => Err(HubError::BadRequest(e.to_string())),
    };
    if let Err(e) = result {
        tracing::warn!(gist = %gist.key(), error = %e, "could not publish the dead-letter notice");
    }
}

/// Posts a test event to a subscription's endpoint (see
/// [`super::Replayer::send_test`]).
pub(super) async fn send_test(
    shared: &Shared,
    who: &Principal,
    subscription: &str,
    payload: Box<serde_json::value::RawValue>,
) -> HubResult<Replayed> {
    let hub = &shared.hub;
    let sub = hub.subscription(subscription)?;
    if !who.may_act_as(&sub.application) {
        return Err(HubError::Forbidden(format!(
            "Subscription {subscription} is not yours to test"
        )));
    }
    let keys = hub
        .signing_keys(&sub)
        .ok_or_else(|| HubError::UnknownSubscriber(format!("{} is inactive", sub.application)))?;
    let now = hub.now_ms();
    let row = crate::ids::first_row_at(now);
    let event = Event {
        id: crate::ids::event_id(row),
        row,
        action: sub.action.clone(),
        payload,
        metadata: serde_json::value::RawValue::from_string(r#"{"test":true}"#.to_owned())
            .map_err(|e| HubError::BadRequest(e.to_string()))?,
        deduper: None,
        publisher: who.label(),
        traceparent: None,
        deliver_at: now,
        fanout: 1,
    };
    let delivery_id = format!("test.{}", event.id);
    let outcome = post(
        &shared.client,
        hub.destinations(),
        Attempt {
            endpoint: &sub.endpoint,
            keys: &keys,
            event: &event,
            delivery_id: &delivery_id,
            number: 1,
            replay: true,
        },
    )
    .await;
    Ok(Replayed {
        gist: delivery_id,
        delivered: outcome.delivered(),
        status_code: outcome.status,
        error: outcome.error.clone(),
        ms: outcome.elapsed.as_millis() as u64,
    })
}

/// Attempts one delivery now, outside its queue; a success also removes its
/// dead letter, if it had one.
pub(super) async fn replay(shared: &Shared, key: &str) -> HubResult<Replayed> {
    let hub = &shared.hub;
    let gist = hub.gist(key).await?;
    let sub = hub.subscription(&gist.subscription)?;
    let event = hub.event(&gist.event).await?;
    let keys = hub
        .signing_keys(&sub)
        .ok_or_else(|| HubError::UnknownSubscriber(format!("{} is inactive", sub.application)))?;
    let number = gist.attempts + 1;
    let outcome = post(
        &shared.client,
        shared.hub.destinations(),
        Attempt {
            endpoint: &sub.endpoint,
            keys: &keys,
            event: &event,
            delivery_id: key,
            number,
            replay: true,
        },
    )
    .await;
    // Recorded over what is stored now: a scheduled attempt may have
    // written the gist meanwhile.
    let tables = &hub.inner.tables;
    let mut was_failed = false;
    let mut died_at = None;
    for _ in 0..8 {
        let Some(stored) = read_gist(&**hub.broker(), tables, key).await? else {
            break;
        };
        let mut gist = stored.gist.clone();
        record(&mut gist, &outcome, (number, true), &event, hub.now_ms());
        was_failed = gist.status == GistStatus::Failed;
        died_at = stored.gist.dead_at;
        if outcome.delivered() {
            gist.status = GistStatus::Delivered;
            gist.delivered_at = Some(hub.now_ms());
            gist.dead_at = None;
            gist.next_attempt_at = None;
        }
        let mut tx = Transaction::new();
        write_gist(&mut tx, tables, Before::Stored(&stored), &gist)?;
        match hub.broker().commit(tx).await {
            Ok(_) => break,
            Err(tidings_core::Error::RecordChanged { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if outcome.delivered() && was_failed {
        hub.purge_dead_letters_of(
            &sub.id,
            &std::iter::once(event.id.clone()).collect(),
            died_at.unwrap_or_else(|| hub.now_ms()),
        )
        .await?;
    }
    Ok(Replayed {
        gist: key.to_owned(),
        delivered: outcome.delivered(),
        status_code: outcome.status,
        error: outcome.error,
        ms: outcome.elapsed.as_millis() as u64,
    })
}
