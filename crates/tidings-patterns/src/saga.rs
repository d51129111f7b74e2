//! Sagas: steps with compensations, run by an orchestrator that writes the
//! saga's state to the broker after every step, so a saga survives the
//! process that ran it.
//!
//! Steps run in order, each taking the context the previous one returned. If
//! a step fails, the steps already done are compensated in reverse order and
//! the saga ends `Failed`, with the failed step and its error. An
//! orchestrator started after a crash finds every unfinished saga
//! ([`SagaOrchestrator::resume`]) and carries it on: the step that was
//! running is run again, so steps and compensations must be idempotent (as
//! every consumer of an at-least-once queue must be).
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use serde::{Deserialize, Serialize};
//! use tidings_patterns::saga::{Saga, SagaOrchestrator, SagaStatus};
//! # let broker: Arc<dyn tidings_core::Broker> = Arc::new(tidings_embedded::EmbeddedBroker::in_memory());
//! #[derive(Clone, Serialize, Deserialize)]
//! struct Order { reserved: bool, paid: bool }
//!
//! let saga = Saga::new("fulfilment")
//!     .step(
//!         "reserve",
//!         |mut o: Order| async move { o.reserved = true; Ok::<_, String>(o) },
//!         |_o: Order| async { Ok::<_, String>(()) },
//!     )
//!     .step(
//!         "pay",
//!         |_o: Order| async { Err::<Order, _>("card declined") },
//!         |_o: Order| async { Ok::<_, String>(()) },
//!     );
//! let orchestrator = SagaOrchestrator::new(broker, saga)?;
//! let end = orchestrator.run("order-1", Order { reserved: false, paid: false }).await?;
//! assert_eq!(end.status, SagaStatus::Failed);
//! assert_eq!(end.failed_step.as_deref(), Some("pay"));
//! assert_eq!(end.compensated, vec!["reserve".to_owned()]);
//! # Ok::<_, tidings_core::Error>(())
//! # }).unwrap();
//! ```

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tidings_core::{Broker, Error, Payload, RecordScan, Result, TableName, Transaction};

use crate::resilience::RetryPolicy;

type StepFuture<T> = Pin<Box<dyn Future<Output = std::result::Result<T, String>> + Send>>;
type Action<C> = Arc<dyn Fn(C) -> StepFuture<C> + Send + Sync>;
type Compensation<C> = Arc<dyn Fn(C) -> StepFuture<()> + Send + Sync>;

struct Step<C> {
    name: String,
    action: Action<C>,
    compensation: Compensation<C>,
}

/// A saga's definition: a name and its steps.
pub struct Saga<C> {
    name: String,
    steps: Vec<Step<C>>,
}

impl<C> Saga<C>
where
    C: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A saga without steps yet. The name keys its state table
    /// (`saga.<name>`): keep it stable.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            steps: Vec::new(),
        }
    }

    /// Adds a step: `action` takes the context and returns the context for
    /// the next step; `compensation` undoes it if a later step fails.
    #[must_use]
    pub fn step<A, AF, AE, K, KF, KE>(mut self, name: &str, action: A, compensation: K) -> Self
    where
        A: Fn(C) -> AF + Send + Sync + 'static,
        AF: Future<Output = std::result::Result<C, AE>> + Send + 'static,
        AE: Display,
        K: Fn(C) -> KF + Send + Sync + 'static,
        KF: Future<Output = std::result::Result<(), KE>> + Send + 'static,
        KE: Display,
    {
        let action = Arc::new(action);
        let compensation = Arc::new(compensation);
        self.steps.push(Step {
            name: name.to_owned(),
            action: Arc::new(move |c| {
                let f = action(c);
                Box::pin(async move { f.await.map_err(|e| e.to_string()) })
            }),
            compensation: Arc::new(move |c| {
                let f = compensation(c);
                Box::pin(async move { f.await.map_err(|e| e.to_string()) })
            }),
        });
        self
    }
}

/// Where a saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Steps are being run.
    Pending,
    /// Every step succeeded.
    Completed,
    /// A step failed; done steps are being undone.
    Compensating,
    /// A step failed and the done steps were compensated.
    Failed,
}

impl SagaStatus {
    /// Whether the saga has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// A saga's stored state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaState {
    /// The saga's id.
    pub id: String,
    /// Where it stands.
    pub status: SagaStatus,
    /// Steps done (and not compensated), in order.
    pub done: Vec<String>,
    /// Steps compensated, in the order they were undone.
    pub compensated: Vec<String>,
    /// The step that failed.
    pub failed_step: Option<String>,
    /// Its error.
    pub error: Option<String>,
    /// Compensations that kept failing (the saga still ends `Failed`).
    pub compensation_errors: Vec<String>,
    /// The context after the last step done.
    pub context: serde_json::Value,
    /// When this state was written, in milliseconds since the epoch.
    pub updated_at: u64,
}

impl SagaState {
    /// The context, as the steps see it.
    pub fn context<C: DeserializeOwned>(&self) -> Result<C> {
        serde_json::from_value(self.context.clone())
            .map_err(|e| Error::InvalidPayload(format!("saga context: {e}")))
    }
}

/// Runs sagas of one definition and keeps their state in the broker.
pub struct SagaOrchestrator<C> {
    broker: Arc<dyn Broker>,
    saga: Arc<Saga<C>>,
    table: TableName,
    compensation_retry: RetryPolicy,
}

impl<C> SagaOrchestrator<C>
where
    C: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// An orchestrator of `saga` on `broker`. Compensations are tried up to
    /// 5 times with backoff before being recorded as failed.
    pub fn new(broker: Arc<dyn Broker>, saga: Saga<C>) -> Result<Self> {
        let table = TableName::new(format!("saga.{}", saga.name))?;
        Ok(Self {
            broker,
            saga: Arc::new(saga),
            table,
            compensation_retry: RetryPolicy::new(5),
        })
    }

    /// Sets how compensations are retried.
    #[must_use]
    pub fn compensation_retry(mut self, retry: RetryPolicy) -> Self {
        self.compensation_retry = retry;
        self
    }

    /// Starts saga `id` with `context` and runs it to its end. Fails with
    /// [`Error::RecordExists`] if a saga with this id was started before.
    pub async fn run(&self, id: &str, context: C) -> Result<SagaState> {
        let state = SagaState {
            id: id.to_owned(),
            status: SagaStatus::Pending,
            done: Vec::new(),
            compensated: Vec::new(),
            failed_step: None,
            error: None,
            compensation_errors: Vec::new(),
            context: serde_json::to_value(&context)
                .map_err(|e| Error::InvalidPayload(e.to_string()))?,
            updated_at: tidings_core::Timestamp::now().as_millis(),
        };
        let mut tx = Transaction::new();
        tx.insert(self.table.clone(), id, Payload::from_value(&state)?);
        self.broker.commit(tx).await?;
        self.drive(state).await
    }

    /// The state of saga `id`, if it was started.
    pub async fn status(&self, id: &str) -> Result<Option<SagaState>> {
        match self.broker.get_record(&self.table, id).await? {
            Some(value) => Ok(Some(value.json()?)),
            None => Ok(None),
        }
    }

    /// Every saga of this definition, by id.
    pub async fn list(&self) -> Result<Vec<SagaState>> {
        self.broker
            .scan_records(&self.table, RecordScan::all())
            .await?
            .iter()
            .map(|r| r.value.json())
            .collect()
    }

    /// Carries every unfinished saga to its end (run once at start-up, by one
    /// orchestrator per saga definition). Returns their final states.
    pub async fn resume(&self) -> Result<Vec<SagaState>> {
        let mut ended = Vec::new();
        for state in self.list().await? {
            if !state.status.is_final() {
                tracing::info!(saga = %self.saga.name, id = %state.id, status = ?state.status, "resuming an unfinished saga");
                ended.push(self.drive(state).await?);
            }
        }
        Ok(ended)
    }

    async fn save(&self, state: &mut SagaState) -> Result<()> {
        state.updated_at = tidings_core::Timestamp::now().as_millis();
        let mut tx = Transaction::new();
        tx.put(
            self.table.clone(),
            state.id.clone(),
            Payload::from_value(&*state)?,
        );
        self.broker.commit(tx).await?;
        Ok(())
    }

    async fn drive(&self, mut state: SagaState) -> Result<SagaState> {
        loop {
            match state.status {
                SagaStatus::Completed | SagaStatus::Failed => return Ok(state),
                SagaStatus::Pending => {
                    let Some(step) = self.saga.steps.get(state.done.len()) else {
                        state.status = SagaStatus::Completed;
                        self.save(&mut state).await?;
                        continue;
                    };
                    let context: C = state.context()?;
                    match catch((step.action)(context)).await {
                        Ok(next) => {
                            state.context = serde_json::to_value(&next)
                                .map_err(|e| Error::InvalidPayload(e.to_string()))?;
                            state.done.push(step.name.clone());
                        }
                        Err(error) => {
                            tracing::warn!(saga = %self.saga.name, id = %state.id, step = %step.name, %error, "saga step failed; compensating");
                            state.status = SagaStatus::Compensating;
                            state.failed_step = Some(step.name.clone());
                            state.error = Some(error);
                        }
                    }
                    self.save(&mut state).await?;
                }
                SagaStatus::Compensating => {
                    let Some(name) = state.done.last().cloned() else {
                        state.status = SagaStatus::Failed;
                        self.save(&mut state).await?;
                        continue;
                    };
                    let step = self.saga.steps.iter().find(|s| s.name == name);
                    if let Some(step) = step
                        && let Err(error) = self.compensate(step, &state).await?
                    {
                        tracing::error!(saga = %self.saga.name, id = %state.id, step = %name, %error, "compensation failed");
                        state.compensation_errors.push(format!("{name}: {error}"));
                    }
                    state.done.pop();
                    state.compensated.push(name);
                    self.save(&mut state).await?;
                }
            }
        }
    }

    /// Runs a step's compensation with retries; the inner error is the last
    /// failure once retries are used up.
    async fn compensate(
        &self,
        step: &Step<C>,
        state: &SagaState,
    ) -> Result<std::result::Result<(), String>> {
        let context: C = state.context()?;
        let mut delays = self.compensation_retry.delays();
        loop {
            match catch((step.compensation)(context.clone())).await {
                Ok(()) => return Ok(Ok(())),
                Err(error) => match delays.next() {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => return Ok(Err(error)),
                },
            }
        }
    }
}

/// Runs a step in a task of its own, so a panic fails the step, not the
/// orchestrator.
async fn catch<T: Send + 'static>(f: StepFuture<T>) -> std::result::Result<T, String> {
    match tokio::spawn(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err("the step panicked".into()),
        Err(e) => Err(e.to_string()),
    }
}
