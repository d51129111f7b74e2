//! A real server on a free port and a real webhook receiver, for end-to-end tests.

#![allow(dead_code)]

mod spec;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;
use tidings_core::Broker;
use tidings_hub::{DeliveryConfig, Hub, HubConfig};
use tidings_server::{AuthConfig, ConnectionLimits, Server, ServerConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The metrics token of every test server.
pub const METRICS_TOKEN: &str = "metrics-token-for-tests-0123";

/// Long enough that only a failure hits it.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct TestServer {
    pub base: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
    pub hub: Hub,
}

/// The tests' authentication: `admin_key` (or protected mode) and the metrics token.
fn test_auth(admin_key: Option<&str>) -> AuthConfig {
    AuthConfig {
        admin_key: admin_key.map(str::to_owned),
        metrics_token: Some(METRICS_TOKEN.to_owned()),
        ..AuthConfig::default()
    }
}

impl TestServer {
    pub async fn start(broker: Arc<dyn Broker>) -> Self {
        Self::start_with(broker, None).await
    }

    pub async fn start_with(broker: Arc<dyn Broker>, admin_key: Option<&str>) -> Self {
        Self::start_configured(broker, admin_key, DeliveryConfig::default()).await
    }

    pub async fn start_configured(
        broker: Arc<dyn Broker>,
        admin_key: Option<&str>,
        delivery: DeliveryConfig,
    ) -> Self {
        Self::start_authenticated(broker, test_auth(admin_key), delivery).await
    }

    /// A server with an admin key (or none) over a hub with `config`.
    pub async fn start_hub(
        broker: Arc<dyn Broker>,
        admin_key: Option<&str>,
        config: HubConfig,
    ) -> Self {
        let server = ServerConfig {
            auth: test_auth(admin_key),
            ..ServerConfig::default()
        };
        Self::start_full(broker, server, config).await
    }

    /// A server with an admin key and these connection limits.
    pub async fn start_limited(
        broker: Arc<dyn Broker>,
        admin_key: &str,
        connections: ConnectionLimits,
    ) -> Self {
        let server = ServerConfig {
            auth: AuthConfig {
                admin_key: Some(admin_key.to_owned()),
                ..AuthConfig::default()
            },
            connections,
            ..ServerConfig::default()
        };
        Self::start_full(broker, server, HubConfig::default()).await
    }

    pub async fn start_authenticated(
        broker: Arc<dyn Broker>,
        auth: AuthConfig,
        delivery: DeliveryConfig,
    ) -> Self {
        let config = HubConfig {
            attempt_timeout: Duration::from_secs(5),
            ..HubConfig::default()
        };
        let server = ServerConfig {
            auth,
            delivery,
            ..ServerConfig::default()
        };
        Self::start_full(broker, server, config).await
    }

    async fn start_full(broker: Arc<dyn Broker>, server: ServerConfig, config: HubConfig) -> Self {
        let hub = Hub::open(broker, config).await.unwrap();
        let config = ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..server
        };
        let server = Server::bind(hub.clone(), config).await.unwrap();
        let base = format!("http://{}", server.local_addr().unwrap());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            server.run(stopped).await.unwrap();
        });
        Self {
            base,
            stop,
            task,
            hub,
        }
    }

    /// Stops gracefully and waits until it has.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// A response: status and JSON body (`Null` if none).
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

/// A client of the server under test. Every answer it gets is checked
/// against the server's /openapi.json: a declared status, a body its schema
/// accepts (a test fails on an answer the document does not describe).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    headers: Vec<(String, String)>,
    spec: Arc<tokio::sync::OnceCell<spec::Spec>>,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.to_owned(),
            headers: Vec::new(),
            spec: Arc::default(),
        }
    }

    /// The server's document, fetched once.
    async fn spec(&self) -> &spec::Spec {
        self.spec
            .get_or_init(|| async {
                let url = format!("{}/openapi.json", self.base);
                let answer = self.http.get(url).send().await.unwrap();
                let doc = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
                spec::Spec::new(doc)
            })
            .await
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        extra: &[(&str, &str)],
    ) -> Answer {
        let verb = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(verb, format!("{}{path}", self.base));
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.body(body.to_vec());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!("not JSON ({status}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        if let Err(e) = self.spec().await.check(method, path, status, &body) {
            panic!("{e}");
        }
        Answer {
            status,
            body,
            headers,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send_json("POST", path, body).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.send_json("PUT", path, body).await
    }

    async fn send_json(&self, method: &str, path: &str, body: Value) -> Answer {
        let bytes = serde_json::to_vec(&body).unwrap();
        self.send(
            method,
            path,
            Some(&bytes),
            &[("content-type", "application/json")],
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, &[]).await
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: tokio::time::Instant,
}

impl Hit {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Remaining failures of a path, the status to fail with, and a `Retry-After` to send.
type FailurePlan = (u32, u16, Option<String>);

#[derive(Clone)]
struct ReceiverState {
    hits: mpsc::UnboundedSender<Hit>,
    plans: Arc<Mutex<HashMap<String, FailurePlan>>>,
    /// While set, every request is answered 503.
    down: Arc<Mutex<bool>>,
    /// While set, requests are recorded but not answered until released.
    held: Arc<tokio::sync::watch::Sender<bool>>,
}

/// A webhook receiver: answers 200 unless told otherwise for a path.
pub struct Receiver {
    pub base: String,
    hits: mpsc::UnboundedReceiver<Hit>,
    state: ReceiverState,
}

async fn receive(
    State(state): State<ReceiverState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    let path = uri.path().to_owned();
    let mut answer = HeaderMap::new();
    let status = {
        let mut plans = state.plans.lock().unwrap();
        if *state.down.lock().unwrap() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            match plans.get_mut(&path) {
                Some((left, status, retry_after)) if *left > 0 => {
                    *left -= 1;
                    if let Some(wait) = retry_after {
                        answer.insert("retry-after", wait.parse().unwrap());
                    }
                    StatusCode::from_u16(*status).unwrap()
                }
                _ => StatusCode::OK,
            }
        }
    };
    // Held or not is decided on arrival: a request that came in before
    // `hold(true)` is answered at once even if the test has already seen it.
    let mut held = state.held.subscribe();
    let arrived_held = *held.borrow_and_update();
    let _ = state.hits.send(Hit {
        path,
        headers,
        body,
        at: tokio::time::Instant::now(),
    });
    if arrived_held {
        let _ = held.wait_for(|held| !*held).await;
    }
    (status, answer)
}

impl Receiver {
    pub async fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = ReceiverState {
            hits: tx,
            plans: Arc::default(),
            down: Arc::default(),
            held: Arc::new(tokio::sync::watch::channel(false).0),
        };
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base,
            hits: rx,
            state,
        }
    }

    /// The next `n` failures on `path` answer `status`.
    pub fn fail(&self, path: &str, n: u32, status: u16) {
        self.fail_with(path, n, status, None);
    }

    /// The same, answering with a `Retry-After` header.
    pub fn fail_with(&self, path: &str, n: u32, status: u16, retry_after: Option<&str>) {
        self.state
            .plans
            .lock()
            .unwrap()
            .insert(path.to_owned(), (n, status, retry_after.map(str::to_owned)));
    }

    /// Holds every answer (requests stay in flight) while `held`.
    pub fn hold(&self, held: bool) {
        self.state.held.send_replace(held);
    }

    /// Answers 503 to everything while `down`.
    pub fn set_down(&self, down: bool) {
        *self.state.down.lock().unwrap() = down;
    }

    /// The next request, waiting for it.
    pub async fn next(&mut self) -> Hit {
        tokio::time::timeout(PATIENCE, self.hits.recv())
            .await
            .expect("no webhook arrived in time")
            .unwrap()
    }

    /// The paths of the next `n` requests.
    pub async fn paths(&mut self, n: usize) -> std::collections::BTreeSet<String> {
        let mut paths = std::collections::BTreeSet::new();
        for _ in 0..n {
            paths.insert(self.next().await.path);
        }
        paths
    }

    /// Nothing arrives within `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.hits.recv()).await.is_err()
    }
}

/// Waits until `check` holds, re-checking whenever `poll` yields (no fixed sleeps
/// as synchronisation: this is for state that has no event to await, checked
/// often, bounded by PATIENCE).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
