//! `tidings-bench hub`: the event hub under load, over HTTP, against
//! `tidings serve` (started here, on the embedded engine) or any
//! Amebo-compatible server given by `--url` — the same client for both, so
//! peers are compared side by side (see docs/benchmarks.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use axum::body::Bytes;
use axum::http::StatusCode;
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HubScenario {
    /// Closed-loop publishing with schema validation, no subscribers.
    Publish,
    /// Publish a burst to one subscription; deliveries per second to a local receiver.
    Deliver,
    /// Publish at a fixed rate; publish → webhook latency.
    Latency,
    /// Queue undelivered events (endpoint down) and read the server's RSS.
    Memory,
    /// Register 1,000 actions of typical schemas (and one application's
    /// whole schema budget of large ones) and read the server's RSS.
    Schemas,
    /// Store `--stored` events with two deliveries each (one delivered,
    /// one to a closed port), then time `/v1/stats` and the first page of
    /// filtered listings, and read the server's RSS and data directory.
    Reads,
    /// Store `--stored` events (delivered), let retention remove them (the
    /// server runs with a retention of `--purge-after`), and measure
    /// publish → webhook latency at `--rate` while it does, and the data
    /// directory before, filled and after.
    Purge,
    /// Publish at `--rate` for `--soak-for` with a retention of
    /// `--purge-after` to a delivering subscription (`--soak-down` adds one
    /// whose endpoint is down): a row a minute of what is stored, the data
    /// directory, the server's RSS and publish → webhook p99.
    Soak,
}

#[derive(Debug, Args)]
pub struct HubBenchArgs {
    /// An Amebo-compatible server to measure; without it, `tidings serve` is
    /// started on a scratch data directory.
    #[arg(long)]
    url: Option<String>,
    /// Its admin key (header `x-amebo-admin-key`).
    #[arg(long, env = "TIDINGS_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Scratch data directory of the started server (emptied before, removed after).
    #[arg(long, default_value = "./tidings-hub-bench-data")]
    dir: PathBuf,
    /// Scenarios to run (default: publish, deliver, latency).
    #[arg(long = "scenario", value_enum)]
    scenarios: Vec<HubScenario>,
    /// Concurrent keep-alive connections of the publishers.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Length of the publish scenario.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Events of the deliver scenario.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Rate of the latency scenario, events per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Length of the latency scenario.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    latency_for: Duration,
    /// Events queued by the memory scenario.
    #[arg(long, default_value_t = 1_000_000)]
    backlog: usize,
    /// Events stored by the reads scenario (each with two deliveries).
    #[arg(long, default_value_t = 1_000_000)]
    stored: usize,
    /// Retention of events, deliveries and dedupers in the purge and soak scenarios.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    purge_after: Duration,
    /// The soak scenario adds a subscriber whose endpoint is down (its
    /// deliveries wait for the endpoint, so their events are kept: storage
    /// grows by the rules).
    #[arg(long)]
    soak_down: bool,
    /// Length of the soak scenario.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "12m")]
    soak_for: Duration,
    /// Extra arguments for the started `tidings serve` (repeatable).
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
}

/// The server under test.
struct Target {
    base: String,
    http: reqwest::Client,
    admin_key: Option<String>,
    child: Option<Child>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Target {
    async fn start(args: &HubBenchArgs) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(args.connections * 2)
            .timeout(Duration::from_secs(60))
            .build()?;
        if let Some(url) = &args.url {
            return Ok(Self {
                base: url.trim_end_matches('/').to_owned(),
                http,
                admin_key: args.admin_key.clone(),
                child: None,
            });
        }
        let _ = std::fs::remove_dir_all(&args.dir);
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut serve_args = args.serve_args.clone();
        if args
            .scenarios
            .iter()
            .any(|s| matches!(s, HubScenario::Purge | HubScenario::Soak))
        {
            let keep = format!("{}s", args.purge_after.as_secs().max(1));
            for flag in [
                "--retain-events",
                "--retain-delivered",
                "--retain-failed",
                "--dedup-window",
            ] {
                serve_args.extend([flag.to_owned(), keep.clone()]);
            }
            serve_args.extend(["--retention-interval".to_owned(), "5s".to_owned()]);
        }
        // The deliver scenario's receiver holds its answers while the
        // backlog is published: attempts must not time out meanwhile (and
        // open the endpoint's breaker, which would pause the drain).
        if (args.scenarios.is_empty() || args.scenarios.contains(&HubScenario::Deliver))
            && !serve_args.iter().any(|a| a == "--delivery-timeout")
        {
            serve_args.extend(["--delivery-timeout".to_owned(), "600s".to_owned()]);
        }
        let child = Command::new(crate::server_binary()?)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .args(&serve_args)
            .env("TIDINGS_BROKER", &args.dir)
            .env("TIDINGS_LOG", "warn")
            .env_remove("TIDINGS_ADMIN_KEY")
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start tidings serve")?;
        let target = Self {
            base: format!("http://127.0.0.1:{port}"),
            http,
            admin_key: None,
            child: Some(child),
        };
        for _ in 0..500 {
            if let Ok(r) = target
                .http
                .get(format!("{}/health", target.base))
                .send()
                .await
                && r.status().is_success()
            {
                return Ok(target);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("tidings serve did not start")
    }

    /// Another handle on the same server, for publisher tasks (it does not own the child).
    fn handle(&self) -> Self {
        Self {
            base: self.base.clone(),
            http: self.http.clone(),
            admin_key: self.admin_key.clone(),
            child: None,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.admin_key {
            Some(key) => req.header("x-amebo-admin-key", key),
            None => req,
        }
    }

    async fn admin_post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let r = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body)?)
            .send()
            .await?;
        let status = r.status().as_u16();
        let bytes = r.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

/// Applications, an action and (optionally) a subscription, named for this run.
struct Setup {
    action: String,
    api_key: String,
}

async fn setup(t: &Target, tag: &str, receiver: Option<(&str, bool)>) -> anyhow::Result<Setup> {
    let publisher = format!("bench-pub-{tag}");
    let (s, body) = t
        .admin_post(
            "/v1/applications",
            json!({"application": publisher, "address": "http://127.0.0.1:9/"}),
        )
        .await?;
    if s != 201 {
        bail!("cannot create the publisher ({s}): {body}");
    }
    let api_key = body["apikey"]
        .as_str()
        .context("no apikey in the answer")?
        .to_owned();
    let action = format!("bench.v1.{tag}");
    let schema = json!({"type": "object", "additionalProperties": false, "required": ["id", "total"],
        "properties": {"id": {"type": "string"}, "total": {"type": "number", "minimum": 0}, "sent_at": {"type": "number"}}});
    let (s, body) = t
        .admin_post(
            "/v1/actions",
            json!({"action": action, "application": publisher, "schemata": schema}),
        )
        .await?;
    if s != 201 {
        bail!("cannot create the action ({s}): {body}");
    }
    if let Some((address, ordered)) = receiver {
        let subscriber = format!("bench-sub-{tag}");
        let (s, body) = t
            .admin_post(
                "/v1/applications",
                json!({"application": subscriber, "address": address}),
            )
            .await?;
        if s != 201 {
            bail!("cannot create the subscriber ({s}): {body}");
        }
        // Amebo needs a read grant first; Tidings has no such route (yet): 404, ignored.
        let _ = t
            .admin_post("/v1/authorizations", json!({"action": action, "subject_type": "service", "subject_name": subscriber, "read": true}))
            .await?;
        let (s, body) = t
            .admin_post("/v1/subscriptions", json!({"application": subscriber, "action": action, "handler": "/hook", "max_retries": 3, "ordered": ordered}))
            .await?;
        if s != 201 {
            bail!("cannot subscribe ({s}): {body}");
        }
    }
    Ok(Setup { action, api_key })
}

/// A second subscriber of `s`'s action at `address`, allowed one attempt
/// per delivery: at a closed port its deliveries wait for the endpoint (the
/// breaker holds them); at [`refusing_receiver`] each fails at its only
/// attempt (a failed gist and a dead letter, without retry waits).
/// Returns its name.
async fn subscribe_down(t: &Target, s: &Setup, tag: &str, address: &str) -> anyhow::Result<String> {
    let down = format!("bench-down-{tag}");
    t.admin_post(
        "/v1/applications",
        json!({"application": down, "address": address}),
    )
    .await?;
    let (status, body) = t
        .admin_post(
            "/v1/subscriptions",
            json!({"application": down, "action": s.action, "handler": "/hook", "max_retries": 1}),
        )
        .await?;
    ensure!(status == 201, "cannot subscribe {down} ({status}): {body}");
    Ok(down)
}

fn now_secs_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Publishes one event; returns whether it was accepted.
async fn publish(t: &Target, s: &Setup) -> anyhow::Result<bool> {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let body = format!(
        r#"{{"action":"{}","deduper":"d-{n}","payload":{{"id":"o-{n}","total":{},"sent_at":{}}}}}"#,
        s.action,
        n % 100,
        now_secs_f64()
    );
    let r = t
        .http
        .post(format!("{}/v1/events", t.base))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", s.api_key))
        .body(body)
        .send()
        .await?;
    let ok = r.status().as_u16() == 201;
    let _ = r.bytes().await?;
    Ok(ok)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// An address where nothing listens.
const CLOSED_PORT: &str = "http://127.0.0.1:9/";

/// A receiver that stamps arrivals (publish → arrival, from the payload's `sent_at`).
async fn receiver() -> anyhow::Result<(String, mpsc::UnboundedReceiver<f64>)> {
    let (address, rx, _gate) = gated_receiver(true).await?;
    Ok((address, rx))
}

/// A receiver that answers only while its gate (the returned sender) is open.
async fn gated_receiver(
    open: bool,
) -> anyhow::Result<(String, mpsc::UnboundedReceiver<f64>, watch::Sender<bool>)> {
    let (tx, rx) = mpsc::unbounded_channel::<f64>();
    let (gate, gate_rx) = watch::channel(open);
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let tx = tx.clone();
        let mut gate_rx = gate_rx.clone();
        async move {
            let _ = gate_rx.wait_for(|open| *open).await;
            let arrived = now_secs_f64();
            let sent = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["payload"]["sent_at"].as_f64())
                .unwrap_or(arrived);
            let _ = tx.send((arrived - sent) * 1000.0);
            StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let address = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((address, rx, gate))
}

/// An endpoint that is up and refuses every delivery with 400: the hub
/// records the failure at once, without tripping the endpoint's breaker.
async fn refusing_receiver() -> anyhow::Result<String> {
    let app = axum::Router::new().fallback(|| async { StatusCode::BAD_REQUEST });
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let address = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(address)
}

pub async fn run(args: HubBenchArgs) -> anyhow::Result<()> {
    let scenarios = if args.scenarios.is_empty() {
        vec![
            HubScenario::Publish,
            HubScenario::Deliver,
            HubScenario::Latency,
        ]
    } else {
        args.scenarios.clone()
    };
    let target = Target::start(&args).await?;
    let run_tag = format!(
        "{:x}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() % 0xffff_ffff
    );
    println!(
        "tidings-bench hub: {} ({}), {} connections",
        target.base,
        if target.child.is_some() {
            "tidings serve, embedded engine, durable"
        } else {
            "given by --url"
        },
        args.connections
    );
    for scenario in scenarios {
        let tag = format!("{}{run_tag}", format!("{scenario:?}").to_lowercase());
        match scenario {
            HubScenario::Publish => publish_scenario(&target, &args, &tag).await?,
            HubScenario::Deliver => deliver_scenario(&target, &args, &tag).await?,
            HubScenario::Latency => latency_scenario(&target, &args, &tag).await?,
            HubScenario::Memory => memory_scenario(&target, &args, &tag).await?,
            HubScenario::Schemas => schemas_scenario(&target, &tag).await?,
            HubScenario::Reads => reads_scenario(&target, &args, &tag).await?,
            HubScenario::Purge => purge_scenario(&target, &args, &tag).await?,
            HubScenario::Soak => soak_scenario(&target, &args, &tag).await?,
        }
    }
    if target.child.is_some() {
        drop(target);
        let _ = std::fs::remove_dir_all(&args.dir);
    }
    Ok(())
}

/// `connections` closed-loop publishers for `duration`: events/s and latency.
async fn closed_loop(
    t: &Arc<Target>,
    s: &Arc<Setup>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<(f64, Vec<f64>, u64)> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (t, s) = (t.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0u64;
            while start.elapsed() < duration {
                let sent = Instant::now();
                match publish(&t, &s).await {
                    Ok(true) => lat.push(sent.elapsed().as_secs_f64() * 1000.0),
                    _ => failed += 1,
                }
            }
            (lat, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (lat, f) = task.await?;
        all.extend(lat);
        failed += f;
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok((rate, all, failed))
}

async fn publish_scenario(t: &Target, args: &HubBenchArgs, tag: &str) -> anyhow::Result<()> {
    let s = Arc::new(setup(t, tag, None).await?);
    let server = t.child.as_ref().map(Child::id);
    let server_cpu = || server.and_then(crate::cluster::cpu_of);
    let cpu_before = server_cpu();
    let t = Arc::new(t.handle());
    let (rate, lat, failed) = closed_loop(&t, &s, args.connections, args.duration).await?;
    // The server's CPU time per event (a server this run started): the
    // cost of a publish, steadier than the rate on a shared machine.
    let cpu = match (cpu_before, server_cpu()) {
        (Some(before), Some(after)) if !lat.is_empty() => format!(
            ", server {:.1} µs of CPU per event",
            (after - before) * 1e6 / lat.len() as f64
        ),
        _ => String::new(),
    };
    println!(
        "publish (schema-checked, durable, {} connections): {rate:.0} events/s, p50 {:.2} ms, p99 {:.2} ms, {failed} failed{cpu}   [target >= 20,000/s]",
        args.connections,
        quantile(&lat, 0.5),
        quantile(&lat, 0.99)
    );
    Ok(())
}

/// Publishes a backlog while the receiver holds its answers, then opens it and
/// times the drain: deliveries per second, not bounded by publishing.
async fn deliver_scenario(t: &Target, args: &HubBenchArgs, tag: &str) -> anyhow::Result<()> {
    let (address, mut arrivals, gate) = gated_receiver(false).await?;
    let s = Arc::new(setup(t, tag, Some((&address, false))).await?);
    let start = Instant::now();
    let published = publish_many(t, &s, args.events, args.connections).await?;
    let published_in = start.elapsed();
    let drain = Instant::now();
    let busy_before = machine_busy();
    gate.send_replace(true);
    let mut arrived = Vec::with_capacity(published);
    arrivals_of(
        &mut arrivals,
        &mut arrived,
        published,
        Duration::from_secs(120),
    )
    .await;
    let got = arrived.len();
    let elapsed = drain.elapsed().as_secs_f64();
    // The whole machine's CPU time per webhook (the server, its store and
    // this process), steadier than the rate on a shared machine.
    let cpu = match (busy_before, machine_busy()) {
        (Some((busy0, all0)), Some((busy1, all1))) if got > 0 && all1 > all0 => format!(
            ", machine {:.0} % busy, {:.2} ms of CPU per webhook",
            100.0 * (busy1 - busy0) / (all1 - all0),
            (busy1 - busy0) * 1000.0 / got as f64
        ),
        _ => String::new(),
    };
    println!(
        "deliver (a backlog of {published} events, published in {:.1} s while the receiver held its answers, one subscription): {got} delivered in {elapsed:.2} s = {:.0} webhooks/s{cpu}   [target >= 5,000/s]",
        published_in.as_secs_f64(),
        got as f64 / elapsed
    );
    Ok(())
}

/// CPU seconds the machine has spent busy and in all, over every core
/// (Linux's /proc/stat; `None` elsewhere).
fn machine_busy() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|t| t.parse().ok())
        .collect();
    let all: f64 = ticks.iter().sum();
    // idle and iowait
    let idle = ticks.get(3)? + ticks.get(4)?;
    // USER_HZ is 100 on Linux.
    Some(((all - idle) / 100.0, all / 100.0))
}

/// Publishes at a steady rate, each event from a task of its own, so a
/// slow answer does not slow the rate.
struct Steady {
    t: Arc<Target>,
    s: Arc<Setup>,
    start: tokio::time::Instant,
    interval: Duration,
    sent: usize,
    accepted: usize,
    running: tokio::task::JoinSet<bool>,
}

impl Steady {
    fn new(t: &Target, s: &Arc<Setup>, rate: u64) -> Self {
        Self {
            t: Arc::new(t.handle()),
            s: s.clone(),
            start: tokio::time::Instant::now(),
            interval: Duration::from_secs_f64(1.0 / rate.max(1) as f64),
            sent: 0,
            accepted: 0,
            running: tokio::task::JoinSet::new(),
        }
    }

    /// Waits for the next event's time and publishes it.
    async fn next(&mut self) {
        tokio::time::sleep_until(self.start + self.interval.mul_f64(self.sent as f64)).await;
        let (t, s) = (self.t.clone(), self.s.clone());
        self.running
            .spawn(async move { publish(&t, &s).await.unwrap_or(false) });
        self.sent += 1;
        while let Some(done) = self.running.try_join_next() {
            self.accepted += usize::from(done.unwrap_or(false));
        }
    }

    /// Waits for the answers still out: (sent, accepted).
    async fn finish(mut self) -> (usize, usize) {
        while let Some(done) = self.running.join_next().await {
            self.accepted += usize::from(done.unwrap_or(false));
        }
        (self.sent, self.accepted)
    }
}

/// Waits for `count` arrivals (each at most `patience` after the last).
async fn arrivals_of(
    arrivals: &mut mpsc::UnboundedReceiver<f64>,
    lat: &mut Vec<f64>,
    count: usize,
    patience: Duration,
) {
    while lat.len() < count {
        match tokio::time::timeout(patience, arrivals.recv()).await {
            Ok(Some(ms)) => lat.push(ms),
            _ => break,
        }
    }
}

async fn latency_scenario(t: &Target, args: &HubBenchArgs, tag: &str) -> anyhow::Result<()> {
    let (address, mut arrivals) = receiver().await?;
    let s = Arc::new(setup(t, tag, Some((&address, false))).await?);
    let total = (args.rate as f64 * args.latency_for.as_secs_f64()) as usize;
    let mut steady = Steady::new(t, &s, args.rate);
    while steady.sent < total {
        steady.next().await;
    }
    let (_, published) = steady.finish().await;
    let mut lat = Vec::with_capacity(published);
    arrivals_of(&mut arrivals, &mut lat, published, Duration::from_secs(60)).await;
    lat.sort_by(f64::total_cmp);
    println!(
        "publish → webhook at {}/s for {:?}: {} of {published} arrived, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms   [target p99 < 20 ms]",
        args.rate,
        args.latency_for,
        lat.len(),
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}

async fn memory_scenario(t: &Target, args: &HubBenchArgs, tag: &str) -> anyhow::Result<()> {
    if t.child.is_none() {
        bail!("the memory scenario reads the RSS of the server it starts: run it without --url");
    }
    // An ordered subscription to a closed port: the first event waits for its
    // retry, everything else stays queued.
    let s = Arc::new(setup(t, tag, Some(("http://127.0.0.1:9/", true))).await?);
    let base = t.handle();
    let shared = Arc::new(base);
    let before = t.rss_kib().unwrap_or(0);
    let start = Instant::now();
    let per_task = args.backlog.div_ceil(args.connections);
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (tt, s) = (shared.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_task {
                let _ = publish(&tt, &s).await;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let after = t.rss_kib().unwrap_or(0);
    let took = start.elapsed().as_secs_f64();
    // Background flushes of the store's memtables finish within seconds.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let settled = t.rss_kib().unwrap_or(0);
    println!(
        "memory: {} undelivered events queued in {took:.0} s; server RSS {:.0} MB before, {:.0} MB just after, {:.0} MB 10 s later   [target < 100 MB]",
        per_task * args.connections,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        settled as f64 / 1024.0
    );
    Ok(())
}

/// Publishes `count` events over `connections` closed loops; returns how
/// many were accepted.
async fn publish_many(
    t: &Target,
    s: &Arc<Setup>,
    count: usize,
    connections: usize,
) -> anyhow::Result<usize> {
    let shared = Arc::new(t.handle());
    let per_task = count.div_ceil(connections);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (t, s) = (shared.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0usize;
            for _ in 0..per_task {
                if publish(&t, &s).await.unwrap_or(false) {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut published = 0;
    for task in tasks {
        published += task.await?;
    }
    Ok(published)
}

async fn purge_scenario(t: &Target, args: &HubBenchArgs, tag: &str) -> anyhow::Result<()> {
    if t.child.is_none() {
        bail!(
            "the purge scenario sets the retention of the server it starts: run it without --url"
        );
    }
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let empty = crate::dir_bytes(&args.dir);
    let (address, mut arrivals) = receiver().await?;
    let s = Arc::new(setup(t, tag, Some((&address, false))).await?);
    let start = Instant::now();
    let stored = publish_many(t, &s, args.stored, args.connections).await?;
    let published_in = start.elapsed();
    let mut arrived = Vec::with_capacity(stored);
    arrivals_of(&mut arrivals, &mut arrived, stored, Duration::from_secs(60)).await;
    let got = arrived.len();
    let filled = crate::dir_bytes(&args.dir);
    println!(
        "purge: {stored} events published in {:.0} s, {got} delivered after {:.0} s; data directory {:.0} MB empty, {:.0} MB filled",
        published_in.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        mb(empty),
        mb(filled)
    );
    // The fill's oldest events are due at start + purge_after: publish at
    // the latency rate from a little before that until they are gone.
    let due = start + args.purge_after;
    if Instant::now() + Duration::from_secs(5) > due {
        println!(
            "purge: WARNING the fill took longer than --purge-after ({:?}): retention overlapped it, and what follows is not a purge of a settled store; raise --purge-after",
            args.purge_after
        );
    }
    tokio::time::sleep_until((due - Duration::from_secs(5)).into()).await;
    let stats = admin_get(t, "/v1/stats").await?;
    let before = stats["events"].as_u64().unwrap_or(0);
    let began = tokio::time::Instant::now();
    let mut steady = Steady::new(t, &s, args.rate);
    let mut lat = Vec::new();
    let mut remaining = before;
    let mut checked = Instant::now();
    // Until the fill is gone (or 20 minutes), then 5 s more.
    let mut purged_at: Option<Instant> = None;
    while purged_at.is_none_or(|at| at.elapsed() < Duration::from_secs(5))
        && began.elapsed() < Duration::from_secs(1200)
    {
        steady.next().await;
        while let Ok(ms) = arrivals.try_recv() {
            lat.push(ms);
        }
        if purged_at.is_none() && checked.elapsed() > Duration::from_secs(1) {
            checked = Instant::now();
            let stats = admin_get(t, "/v1/stats").await?;
            remaining = stats["events"].as_u64().unwrap_or(0);
            if remaining <= steady.sent as u64 {
                purged_at = Some(Instant::now());
            }
        }
    }
    let (sent, _) = steady.finish().await;
    arrivals_of(&mut arrivals, &mut lat, sent, Duration::from_secs(30)).await;
    lat.sort_by(f64::total_cmp);
    let purging = began.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(30)).await;
    println!(
        "purge: {} of {before} stored events removed in {purging:.0} s while publishing at {}/s: {} of {sent} arrived, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms   [target p99 < 20 ms]",
        before.saturating_sub(remaining.saturating_sub(sent as u64)),
        args.rate,
        lat.len(),
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "purge: data directory {:.0} MB empty, {:.0} MB filled, {:.0} MB 30 s after the purge",
        mb(empty),
        mb(filled),
        mb(crate::dir_bytes(&args.dir))
    );
    Ok(())
}

/// Publishes at `--rate` for `--soak-for` while retention removes what is
/// older than `--purge-after`; prints a row a minute.
async fn soak_scenario(t: &Target, args: &HubBenchArgs, tag: &str) -> anyhow::Result<()> {
    if t.child.is_none() {
        bail!("the soak scenario sets the retention of the server it starts: run it without --url");
    }
    let (address, mut arrivals) = receiver().await?;
    let s = Arc::new(setup(t, tag, Some((&address, false))).await?);
    if args.soak_down {
        subscribe_down(t, &s, tag, CLOSED_PORT).await?;
    }
    println!(
        "soak: {}/s for {:?}, retention {:?} (sweeps every 5 s)",
        args.rate, args.soak_for, args.purge_after
    );
    println!(
        "| minute | published | arrived | p99 publish → webhook | events stored | deliveries stored | of them failed | data directory | server RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut steady = Steady::new(t, &s, args.rate);
    let began = Instant::now();
    let (mut minute, mut sent_before) = (0, 0);
    let mut lat = Vec::new();
    while began.elapsed() < args.soak_for {
        steady.next().await;
        while let Ok(ms) = arrivals.try_recv() {
            lat.push(ms);
        }
        if began.elapsed() >= Duration::from_secs(60 * (minute + 1)) {
            minute += 1;
            lat.sort_by(f64::total_cmp);
            let stats = admin_get(t, "/v1/stats").await?;
            println!(
                "| {minute} | {} | {} | {:.2} ms | {} | {} | {} | {:.0} MB | {:.0} MB |",
                steady.sent - sent_before,
                lat.len(),
                quantile(&lat, 0.99),
                stats["events"],
                stats["total"],
                stats["failed"],
                crate::dir_bytes(&args.dir) as f64 / 1e6,
                t.rss_kib().unwrap_or(0) as f64 / 1024.0
            );
            sent_before = steady.sent;
            lat.clear();
        }
    }
    steady.finish().await;
    Ok(())
}

async fn admin_get(t: &Target, path: &str) -> anyhow::Result<Value> {
    let r = t.request(reqwest::Method::GET, path).send().await?;
    ensure!(r.status().is_success(), "GET {path}: {}", r.status());
    Ok(serde_json::from_slice(&r.bytes().await?)?)
}

async fn reads_scenario(t: &Target, args: &HubBenchArgs, tag: &str) -> anyhow::Result<()> {
    if t.child.is_none() {
        bail!("the reads scenario reads the RSS of the server it starts: run it without --url");
    }
    let (address, mut arrivals) = receiver().await?;
    let s = Arc::new(setup(t, tag, Some((&address, false))).await?);
    let down = subscribe_down(t, &s, tag, &refusing_receiver().await?).await?;
    let start = Instant::now();
    let stored = publish_many(t, &s, args.stored, args.connections).await?;
    let published_in = start.elapsed().as_secs_f64();
    let mut arrived = Vec::with_capacity(stored);
    arrivals_of(&mut arrivals, &mut arrived, stored, Duration::from_secs(60)).await;
    let got = arrived.len();
    println!(
        "reads: {stored} events published in {published_in:.0} s, {got} delivered after {:.0} s",
        start.elapsed().as_secs_f64()
    );
    // The target's state: every delivery settled (the refused ones failed).
    let mut stats = admin_get(t, "/v1/stats").await?;
    let mut unchanged_polls = 0;
    while stats["pending"].as_u64().unwrap_or(0) + stats["retrying"].as_u64().unwrap_or(0) > 0 {
        let before = (stats["delivered"].clone(), stats["failed"].clone());
        tokio::time::sleep(Duration::from_secs(5)).await;
        stats = admin_get(t, "/v1/stats").await?;
        let now = (stats["delivered"].clone(), stats["failed"].clone());
        unchanged_polls = if now == before {
            unchanged_polls + 1
        } else {
            0
        };
        ensure!(unchanged_polls < 24, "deliveries stopped settling: {stats}");
    }
    println!(
        "reads: every delivery settled after {:.0} s",
        start.elapsed().as_secs_f64()
    );
    println!("reads: /v1/stats says {stats}");
    let sub = format!("bench-sub-{tag}");
    let publisher = format!("bench-pub-{tag}");
    let queries = [
        "/v1/stats".to_owned(),
        "/v1/gists".to_owned(),
        "/v1/gists?status=delivered".to_owned(),
        "/v1/gists?status=failed".to_owned(),
        "/v1/gists?completed=false".to_owned(),
        format!("/v1/gists?subscriber={sub}"),
        format!("/v1/gists?subscriber={down}&status=failed"),
        "/v1/events".to_owned(),
        format!("/v1/events?action={}", s.action),
        format!("/v1/events?application={publisher}"),
    ];
    for query in &queries {
        let mut lat = Vec::with_capacity(200);
        for _ in 0..200 {
            let began = Instant::now();
            admin_get(t, query).await?;
            lat.push(began.elapsed().as_secs_f64() * 1000.0);
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "reads: GET {query}: p50 {:.2} ms, p99 {:.2} ms   [target p99 < 20 ms]",
            quantile(&lat, 0.5),
            quantile(&lat, 0.99)
        );
    }
    console_pages(t, &s.action).await?;
    println!(
        "reads: server RSS {:.0} MB, data directory {:.0} MB   [target RSS < 150 MB]",
        t.rss_kib().unwrap_or(0) as f64 / 1024.0,
        crate::dir_bytes(&args.dir) as f64 / 1e6
    );
    Ok(())
}

/// The console's pages over what the reads scenario stored (the server is
/// in protected mode: a loopback caller is the admin, as a browser on the
/// host would be). Issue 20's target: each under 200 ms.
async fn console_pages(t: &Target, action: &str) -> anyhow::Result<()> {
    // An event of the bench's action: two deliveries, one failed.
    let newest = admin_get(t, &format!("/v1/events?action={action}&pagination=1")).await?;
    let event = newest[0]["event"].as_str().unwrap_or_default().to_owned();
    ensure!(!event.is_empty(), "no event of {action}: {newest}");
    let pages = [
        "/console/".to_owned(),
        "/console/live".to_owned(),
        "/console/applications".to_owned(),
        "/console/actions".to_owned(),
        format!("/console/actions/{action}"),
        "/console/subscriptions".to_owned(),
        "/console/events".to_owned(),
        format!("/console/events?action={action}&page=20"),
        format!("/console/events/{event}"),
        "/console/dead-letters".to_owned(),
        "/console/queues".to_owned(),
    ];
    for page in &pages {
        let mut lat = Vec::with_capacity(50);
        for _ in 0..50 {
            let began = Instant::now();
            let r = t.request(reqwest::Method::GET, page).send().await?;
            ensure!(r.status().is_success(), "GET {page}: {}", r.status());
            r.bytes().await?;
            lat.push(began.elapsed().as_secs_f64() * 1000.0);
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "reads: console GET {page}: p50 {:.2} ms, p99 {:.2} ms   [target < 200 ms]",
            quantile(&lat, 0.5),
            quantile(&lat, 0.99)
        );
    }
    Ok(())
}

/// A schema of the kind teams register: an order with a dozen typed,
/// formatted and patterned fields, nested items, `n` making each distinct.
fn typical_schema(n: usize) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("order event {n}"),
        "type": "object",
        "required": ["order_id", "email", "amount", "currency", "items", "created_at"],
        "additionalProperties": false,
        "properties": {
            "order_id": {"type": "string", "format": "uuid"},
            "customer_id": {"type": "string", "pattern": "^cus_[A-Za-z0-9]{8,32}$"},
            "email": {"type": "string", "format": "email", "maxLength": 254},
            "amount": {"type": "number", "minimum": 0, "maximum": 1_000_000},
            "currency": {"enum": ["EUR", "USD", "GBP", "JPY", "CHF"]},
            "status": {"enum": ["placed", "paid", "shipped", "cancelled"]},
            "created_at": {"type": "string", "format": "date-time"},
            "coupon": {"type": ["string", "null"], "maxLength": 32},
            "items": {
                "type": "array", "minItems": 1, "maxItems": 500,
                "items": {
                    "type": "object", "required": ["sku", "quantity"], "additionalProperties": false,
                    "properties": {
                        "sku": {"type": "string", "pattern": "^[A-Z0-9-]{4,32}$"},
                        "quantity": {"type": "integer", "minimum": 1},
                        "price": {"type": "number", "minimum": 0}
                    }
                }
            },
            "shipping": {
                "type": "object",
                "properties": {
                    "country": {"type": "string", "pattern": "^[A-Z]{2}$"},
                    "postcode": {"type": "string", "maxLength": 16},
                    "street": {"type": "string", "maxLength": 200}
                }
            },
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}}
        }
    })
}

async fn schemas_scenario(t: &Target, tag: &str) -> anyhow::Result<()> {
    if t.child.is_none() {
        bail!("the schemas scenario reads the RSS of the server it starts: run it without --url");
    }
    let app = format!("schemas-{tag}");
    let (status, body) = t
        .admin_post(
            "/v1/applications",
            json!({"application": app, "address": "http://127.0.0.1:9/"}),
        )
        .await?;
    ensure!(status == 201, "cannot register the application: {body}");
    let before = t.rss_kib().unwrap_or(0);
    let bytes = serde_json::to_vec(&typical_schema(0))?.len();
    for n in 0..1000 {
        let (status, body) = t
            .admin_post(
                "/v1/actions",
                json!({"action": format!("{app}.event{n}"), "application": app, "schemata": typical_schema(n)}),
            )
            .await?;
        ensure!(status == 201, "action {n}: {body}");
    }
    let typical = t.rss_kib().unwrap_or(0);
    println!(
        "schemas: 1,000 actions of a typical {bytes}-byte schema; server RSS {:.0} MB before, {:.0} MB after   [target < 150 MB]",
        before as f64 / 1024.0,
        typical as f64 / 1024.0
    );
    // The most one application may hold: its 4 MiB of schema as 64 KiB enums.
    let big = format!("big-{tag}");
    let (status, body) = t
        .admin_post(
            "/v1/applications",
            json!({"application": big, "address": "http://127.0.0.1:9/"}),
        )
        .await?;
    ensure!(status == 201, "cannot register the application: {body}");
    let mut registered = 0;
    for n in 0.. {
        let values: Vec<String> = (0..5500).map(|i| format!("{n}-{i:05}")).collect();
        let (status, _) = t
            .admin_post(
                "/v1/actions",
                json!({"action": format!("{big}.enum{n}"), "application": big, "schemata": {"enum": values}}),
            )
            .await?;
        if status != 201 {
            break;
        }
        registered += 1;
    }
    let full = t.rss_kib().unwrap_or(0);
    println!(
        "schemas: one application at its schema budget ({registered} enum schemas of ~64 KiB, then refused); server RSS {:.0} MB",
        full as f64 / 1024.0
    );
    Ok(())
}
