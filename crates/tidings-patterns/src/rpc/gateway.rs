//! An API gateway over [`Rpc`]: each service called under its own
//! [`CallPolicy`] (timeout, retries, breaker), and fan-out to several
//! services in parallel that returns what succeeded beside what failed (the
//! seeds' `create_order_aggregate`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Rpc, RpcError};
use crate::resilience::{CallPolicy, PolicyError};

/// Time a call waits when its policy sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Results of a fan-out, by the name each request was given.
pub type Gathered = BTreeMap<String, Result<serde_json::Value, PolicyError<RpcError>>>;

/// Calls services through one [`Rpc`], each under its policy.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use serde_json::{json, Value};
/// use tidings_patterns::resilience::CallPolicy;
/// use tidings_patterns::rpc::{Gateway, Rpc};
/// # let broker: Arc<dyn tidings_core::Broker> = Arc::new(tidings_embedded::EmbeddedBroker::in_memory());
/// let rpc = Rpc::new(broker);
/// let orders = rpc.serve("orders", "get", |_: Value| async { Ok::<_, String>(json!({"status": "paid"})) }).await?;
/// let gateway = Gateway::new(rpc.clone(), CallPolicy::new().timeout(Duration::from_millis(300)));
/// let got = gateway
///     .gather([("order", "orders", "get", json!({"id": 1})), ("payment", "payments", "get", json!({"id": 1}))])
///     .await;
/// assert_eq!(got["order"].as_ref().ok(), Some(&json!({"status": "paid"})));
/// assert!(got["payment"].is_err()); // nobody serves payments: timed out, the rest still returned
/// orders.stop().await;
/// rpc.close().await;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Gateway {
    rpc: Rpc,
    default: CallPolicy,
    policies: HashMap<String, CallPolicy>,
}

impl Gateway {
    /// A gateway calling every service under `default`.
    pub fn new(rpc: Rpc, default: CallPolicy) -> Self {
        Self {
            rpc,
            default,
            policies: HashMap::new(),
        }
    }

    /// Calls `service` under `policy` instead (give each service its own
    /// breaker, so one failing service does not stop calls to the others).
    #[must_use]
    pub fn with_policy(mut self, service: &str, policy: CallPolicy) -> Self {
        self.policies.insert(service.to_owned(), policy);
        self
    }

    fn policy(&self, service: &str) -> &CallPolicy {
        self.policies.get(service).unwrap_or(&self.default)
    }

    /// Calls one endpoint under the service's policy.
    pub async fn call<Req, Resp>(
        &self,
        service: &str,
        endpoint: &str,
        request: &Req,
    ) -> Result<Resp, PolicyError<RpcError>>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let policy = self.policy(service);
        let timeout = policy.attempt_timeout().unwrap_or(DEFAULT_TIMEOUT);
        policy
            .run(|| self.rpc.call(service, endpoint, request, timeout))
            .await
    }

    /// Calls every `(name, service, endpoint, request)` at once and returns
    /// each result under its name, successes and failures alike.
    pub async fn gather<I, N, S, P>(&self, requests: I) -> Gathered
    where
        I: IntoIterator<Item = (N, S, P, serde_json::Value)>,
        N: Into<String>,
        S: AsRef<str>,
        P: AsRef<str>,
    {
        let calls = requests
            .into_iter()
            .map(|(name, service, endpoint, request)| {
                let name = name.into();
                async move {
                    let result = self
                        .call(service.as_ref(), endpoint.as_ref(), &request)
                        .await;
                    (name, result)
                }
            });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .collect()
    }
}
