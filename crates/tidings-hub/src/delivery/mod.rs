//! The [`Dispatcher`]: reads each active subscription's queue and posts its
//! events to the subscriber, with retries, dead letters and notices.
//!
//! Each subscription has its own lanes (a delivery each: post it, settle
//! it), fed by one receive at a time that takes as many deliveries as lanes
//! are free: a slow or dead endpoint holds only its own lanes, never another
//! subscription's. A global limit bounds requests in flight. Each endpoint has
//! a circuit breaker: while it is open, that endpoint's lanes wait (without
//! using up attempts) instead of hammering it. An ordered
//! subscription has one lane, and waits out a failed event's retry delay
//! before it takes anything else, so its events arrive in publish order;
//! among several processes, only the holder of its lease (table
//! `hub.leases`) delivers it.

pub mod schedule;
pub mod webhook;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
/// Where an endpoint's circuit breaker stands.
pub use tidings_patterns::breaker::BreakerState;

use tidings_patterns::{BreakerConfig, CircuitBreaker};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{HubError, HubResult};
use crate::hub::Hub;

/// Settings of webhook delivery.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Requests in flight per (unordered) subscription that does not set its own.
    pub per_subscription: usize,
    /// Requests in flight in total.
    pub global: usize,
    /// The breaker of each endpoint: after repeated failures (no answer,
    /// 5xx, 429) its deliveries wait instead of being attempted.
    pub breaker: BreakerConfig,
    /// An ordered subscription is delivered by one process at a time, the
    /// holder of its lease: how long a standby waits, after the holder
    /// stopped renewing it (it died), before taking over.
    pub lease_ttl: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            per_subscription: 16,
            global: 512,
            breaker: BreakerConfig::default(),
            lease_ttl: Duration::from_secs(5),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) hub: Hub,
    pub(crate) client: reqwest::Client,
    pub(crate) config: DeliveryConfig,
    pub(crate) global: Semaphore,
    breakers: Mutex<HashMap<String, Arc<CircuitBreaker>>>,
}

impl Shared {
    /// The breaker of an endpoint (one per URL, shared by its subscriptions).
    pub(crate) fn breaker(&self, endpoint: &str) -> Arc<CircuitBreaker> {
        let mut breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        breakers
            .entry(endpoint.to_owned())
            .or_insert_with(|| Arc::new(CircuitBreaker::new(self.config.breaker)))
            .clone()
    }
}

/// Delivers webhooks for every active subscription of a hub, until stopped.
pub struct Dispatcher {
    shared: Arc<Shared>,
}

impl Dispatcher {
    /// A dispatcher for `hub`.
    pub fn new(hub: Hub, config: DeliveryConfig) -> HubResult<Self> {
        let timeout = hub.config().attempt_timeout;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(hub.destinations().resolver())
            .user_agent(concat!("Tidings/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(config.per_subscription.max(1) * 4)
            .build()
            .map_err(|e| HubError::BadRequest(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            shared: Arc::new(Shared {
                global: Semaphore::new(config.global.max(1)),
                breakers: Mutex::default(),
                hub,
                client,
                config,
            }),
        })
    }

    /// Runs until `stop` is cancelled: starts lanes for active
    /// subscriptions, stops those of removed or deactivated ones (each
    /// subscription's lanes share a child token of `stop`), and lets
    /// in-flight attempts finish before returning.
    pub async fn run(self, stop: CancellationToken) {
        let mut changes = self.shared.hub.changes();
        // Keyed by what the lanes depend on: a change of it restarts them.
        let mut running: HashMap<(String, bool, usize), CancellationToken> = HashMap::new();
        let mut lanes = JoinSet::new();
        let default_lanes = self.shared.config.per_subscription.max(1);
        loop {
            // A subscription's own `concurrency` is a total over the live
            // processes (each takes its share, rounded up); the default is
            // per process (docs/decisions/0024-delivery-limits-across-processes.md).
            let processes = self.shared.hub.live_processes().max(1);
            let wanted: HashSet<(String, bool, usize)> = self.shared.hub.with_catalog(|c| {
                c.subscriptions
                    .values()
                    .filter(|s| s.active)
                    .filter(|s| c.applications.get(&s.application).is_some_and(|a| a.active))
                    .map(|s| {
                        let count = if s.ordered {
                            1
                        } else {
                            s.concurrency
                                .map_or(default_lanes, |n| (n as usize).div_ceil(processes))
                        };
                        (s.id.clone(), s.ordered, count)
                    })
                    .collect()
            });
            running.retain(|key, halt| {
                let keep = wanted.contains(key);
                if !keep {
                    halt.cancel();
                }
                keep
            });
            for key in wanted {
                if running.contains_key(&key) {
                    continue;
                }
                let halt = stop.child_token();
                lanes.spawn(worker::subscription(
                    self.shared.clone(),
                    key.0.clone(),
                    key.1,
                    key.2,
                    halt.clone(),
                ));
                running.insert(key, halt);
            }
            // Reap finished lanes so the set does not grow.
            while lanes.try_join_next().is_some() {}
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                () = stop.cancelled() => break,
            }
        }
        for halt in running.values() {
            halt.cancel();
        }
        while lanes.join_next().await.is_some() {}
    }
}

/// A handle that replays deliveries (shared with the HTTP layer).
#[derive(Clone)]
pub struct Replayer {
    shared: Arc<Shared>,
}

impl Dispatcher {
    /// A handle for replays that outlives [`Dispatcher::run`].
    pub fn replayer(&self) -> Replayer {
        Replayer {
            shared: self.shared.clone(),
        }
    }
}

impl Replayer {
    /// Attempts one delivery now, outside its queue.
    pub async fn replay(&self, gist: &str) -> HubResult<crate::views::Replayed> {
        worker::replay(&self.shared, gist).await
    }

    /// Posts a test event of a subscription's action, carrying `payload`,
    /// to its endpoint now, signed as its deliveries are; nothing is
    /// stored or queued (`who` must own the subscription, or be the admin).
    pub async fn send_test(
        &self,
        who: &crate::Principal,
        subscription: &str,
        payload: Box<serde_json::value::RawValue>,
    ) -> HubResult<crate::views::Replayed> {
        worker::send_test(&self.shared, who, subscription, payload).await
    }

    /// Where this process's breaker of an endpoint stands (`None`: this
    /// process has not delivered to it since it started).
    pub fn breaker_state(&self, endpoint: &str) -> Option<BreakerState> {
        let breakers = self
            .shared
            .breakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        breakers.get(endpoint).map(|b| b.state())
    }
}
