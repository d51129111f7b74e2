//! `tidings-bench cluster`: several `tidings serve` processes on one store
//! (a Redis prefix, a PostgreSQL schema), issue 18. Three scenarios:
//!
//! - `drain`: N = 1, 2, 3 processes (alternating, `--rounds` times), each
//!   with a fresh store: `--events` events published through all of them
//!   while the receiver holds its answers, then released; the rate at which
//!   they arrive, the CPU the processes and the store's server spent per
//!   event, and the store's operations per event (Redis commands,
//!   PostgreSQL transactions).
//! - `propagation`: three processes; a new API key minted through one, then
//!   the old key tried on the other two until it is refused: from the
//!   minting answer to the first 401 on each.
//! - `failover`: three processes, an ordered subscription, events
//!   published steadily; the holder of its lease killed with SIGKILL: from
//!   the kill to the next delivery of that subscription (by a survivor).
//! - `recovery`: three processes, an unordered subscription whose endpoint
//!   takes 300 ms to answer, events published steadily; one process killed
//!   with SIGKILL: from the kill to the arrival of every event accepted (the
//!   last are those the dead process had in flight).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use axum::http::StatusCode;
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterScenario {
    /// Delivery rate of 1, 2 and 3 processes.
    Drain,
    /// How long a catalog change takes to reach the other processes.
    Propagation,
    /// From killing an ordered subscription's holder to the next delivery.
    Failover,
    /// From killing a process to the arrival of every event (unordered: what
    /// the dead process had in flight comes back after the visibility timeout).
    Recovery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Store {
    Redis,
    Postgres,
}

#[derive(Debug, Args)]
pub struct ClusterBenchArgs {
    /// Scenarios to run (default: all).
    #[arg(long = "scenario", value_enum)]
    scenarios: Vec<ClusterScenario>,
    /// Stores to run them on (default: both).
    #[arg(long = "store", value_enum)]
    stores: Vec<Store>,
    #[arg(
        long,
        env = "TIDINGS_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    #[arg(
        long,
        env = "TIDINGS_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// Events of each drain.
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// Times the drain's 1, 2, 3 sequence runs (alternating: 1 2 3, 3 2 1, ...).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Keys minted by the propagation scenario.
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// Kills of the failover scenario.
    #[arg(long, default_value_t = 10)]
    trials: usize,
    /// Extra arguments for every started `tidings serve` (repeatable).
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
}

/// A fresh place in a store, removed when dropped.
struct Place {
    store: Store,
    url: String,
    name: String,
    admin_url: String,
}

impl Place {
    fn new(args: &ClusterBenchArgs, store: Store, n: usize) -> Self {
        let name = format!("tidings_bench_cluster_{}_{n}", std::process::id());
        let (base, admin_url) = match store {
            Store::Redis => (&args.redis_url, args.redis_url.clone()),
            Store::Postgres => (&args.postgres_url, args.postgres_url.clone()),
        };
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = match store {
            Store::Redis => format!("{base}{sep}prefix={name}:"),
            Store::Postgres => format!("{base}{sep}schema={name}"),
        };
        Self {
            store,
            url,
            name,
            admin_url,
        }
    }

    /// Operations the store has done so far (Redis: commands processed;
    /// PostgreSQL: transactions committed in the database), for per-event
    /// costs. Other clients of the same server count too: run alone.
    async fn operations(&self) -> anyhow::Result<u64> {
        match self.store {
            Store::Redis => {
                let client = redis::Client::open(self.admin_url.as_str())?;
                let mut con = client.get_multiplexed_async_connection().await?;
                let info: String = redis::cmd("INFO")
                    .arg("stats")
                    .query_async(&mut con)
                    .await?;
                info.lines()
                    .find_map(|l| l.strip_prefix("total_commands_processed:"))
                    .and_then(|v| v.trim().parse().ok())
                    .context("no total_commands_processed in INFO")
            }
            Store::Postgres => {
                let (client, connection) =
                    tokio_postgres::connect(&self.admin_url, tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                let row = client
                    .query_one(
                        "SELECT xact_commit::bigint FROM pg_stat_database WHERE datname = current_database()",
                        &[],
                    )
                    .await?;
                Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
            }
        }
    }

    /// CPU seconds the store's server has used so far (Redis: `INFO cpu`;
    /// PostgreSQL: every local process named `postgres`, from /proc).
    async fn cpu_seconds(&self) -> anyhow::Result<f64> {
        match self.store {
            Store::Redis => {
                let client = redis::Client::open(self.admin_url.as_str())?;
                let mut con = client.get_multiplexed_async_connection().await?;
                let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut con).await?;
                let field = |name: &str| {
                    info.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .unwrap_or(0.0)
                };
                Ok(field("used_cpu_user:") + field("used_cpu_sys:"))
            }
            Store::Postgres => {
                let mut total = 0.0;
                for entry in std::fs::read_dir("/proc")?.flatten() {
                    let Some(pid) = entry
                        .file_name()
                        .to_str()
                        .and_then(|n| n.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    let comm =
                        std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    if comm.trim() == "postgres" {
                        total += cpu_of(pid).unwrap_or(0.0);
                    }
                }
                Ok(total)
            }
        }
    }

    async fn remove(&self) -> anyhow::Result<()> {
        match self.store {
            Store::Redis => {
                let client = redis::Client::open(self.admin_url.as_str())?;
                let mut con = client.get_multiplexed_async_connection().await?;
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}:*", self.name))
                    .query_async(&mut con)
                    .await?;
                for chunk in keys.chunks(500) {
                    let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut con).await?;
                }
            }
            Store::Postgres => {
                let (client, connection) =
                    tokio_postgres::connect(&self.admin_url, tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
                    .await?;
            }
        }
        Ok(())
    }
}

/// `tidings serve` processes on one place, killed when dropped.
struct Processes {
    children: Vec<Option<Child>>,
    bases: Vec<String>,
    http: reqwest::Client,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Processes {
    async fn start(place: &Place, n: usize, extra: &[String]) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(120))
            .build()?;
        let binary = crate::server_binary()?;
        let mut children = Vec::new();
        let mut bases = Vec::new();
        for _ in 0..n {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let child = Command::new(&binary)
                .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
                .args(extra)
                .env("TIDINGS_BROKER", &place.url)
                .env("TIDINGS_LOG", "error")
                .env_remove("TIDINGS_ADMIN_KEY")
                .stdout(Stdio::null())
                .spawn()
                .context("cannot start tidings serve")?;
            children.push(Some(child));
            bases.push(format!("http://127.0.0.1:{port}"));
        }
        let processes = Self {
            children,
            bases,
            http,
        };
        for base in &processes.bases {
            processes.wait_ready(base).await?;
        }
        Ok(processes)
    }

    async fn wait_ready(&self, base: &str) -> anyhow::Result<()> {
        for _ in 0..1000 {
            if let Ok(r) = self.http.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("tidings serve at {base} did not become ready")
    }

    async fn call(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.bases[i]));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body)?);
        }
        let r = request.send().await?;
        let status = r.status().as_u16();
        let bytes = r.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    async fn post(&self, i: usize, path: &str, body: Value) -> anyhow::Result<Value> {
        let (s, answer) = self
            .call(i, reqwest::Method::POST, path, None, Some(&body))
            .await?;
        ensure!((200..300).contains(&s), "POST {path}: {s} {answer}");
        Ok(answer)
    }

    /// CPU seconds (user + system) each process has used so far.
    fn cpu_seconds(&self) -> Vec<f64> {
        self.children
            .iter()
            .map(|c| c.as_ref().and_then(|c| cpu_of(c.id())).unwrap_or(0.0))
            .collect()
    }

    /// An application `shop` with the action `shop.sold`, and `mailer`
    /// subscribed to it at `address` (`ordered` if asked), made through
    /// process 0; returns once every process fans the action out to it.
    async fn setup(&self, address: &str, ordered: bool) -> anyhow::Result<()> {
        self.post(
            0,
            "/v1/applications",
            json!({"application": "shop", "address": "http://shop.invalid"}),
        )
        .await?;
        self.post(
            0,
            "/v1/applications",
            json!({"application": "mailer", "address": address}),
        )
        .await?;
        self.post(
            0,
            "/v1/actions",
            json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}}),
        )
        .await?;
        self.post(0, "/v1/subscriptions", json!({"application": "mailer", "action": "shop.sold", "handler": "/sold", "ordered": ordered}))
            .await?;
        // Probes (no `n`) until each process has heard of the subscription.
        for i in 0..self.bases.len() {
            loop {
                let answer = self
                    .post(
                        i,
                        "/v1/events",
                        json!({"action": "shop.sold", "payload": {}}),
                    )
                    .await?;
                if answer["fanout"] == json!(1) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(())
    }
}

/// CPU seconds of a process (Linux: /proc/<pid>/stat, in clock ticks of 1/100 s).
pub(crate) fn cpu_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// A receiver: each arrival's `n` (from the payload; `None` for probes)
/// and instant; answers only while the gate is open.
async fn receiver(
    open: bool,
    hold: Duration,
) -> anyhow::Result<(
    String,
    mpsc::UnboundedReceiver<(Option<u64>, Instant)>,
    watch::Sender<bool>,
)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (gate, gate_rx) = watch::channel(open);
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let tx = tx.clone();
        let mut gate_rx = gate_rx.clone();
        async move {
            let _ = gate_rx.wait_for(|open| *open).await;
            tokio::time::sleep(hold).await;
            let n = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["payload"]["n"].as_u64());
            let _ = tx.send((n, Instant::now()));
            StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let address = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((address, rx, gate))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(args: ClusterBenchArgs) -> anyhow::Result<()> {
    let scenarios = crate::chosen(&args.scenarios);
    let stores = crate::chosen(&args.stores);
    let mut places = 0;
    for scenario in scenarios {
        for &store in &stores {
            match scenario {
                ClusterScenario::Drain => drain(&args, store, &mut places).await?,
                ClusterScenario::Propagation => propagation(&args, store, &mut places).await?,
                ClusterScenario::Failover => failover(&args, store, &mut places).await?,
                ClusterScenario::Recovery => recovery(&args, store, &mut places).await?,
            }
        }
    }
    Ok(())
}

async fn drain(args: &ClusterBenchArgs, store: Store, places: &mut usize) -> anyhow::Result<()> {
    println!(
        "\n{store:?}: drain of {} events, N processes (rate; CPU per event of each process; store operations per event)",
        args.events
    );
    println!(
        "| processes | webhooks/s | hub CPU ms/event (all processes) | store CPU ms/event | store ops/event |"
    );
    println!("|---|---|---|---|---|");
    let mut order = Vec::new();
    for round in 0..args.rounds {
        if round % 2 == 0 {
            order.extend([1, 2, 3]);
        } else {
            order.extend([3, 2, 1]);
        }
    }
    // Held answers must not time out while the backlog is published.
    let mut extra = vec!["--delivery-timeout".to_owned(), "300s".to_owned()];
    extra.extend(args.serve_args.iter().cloned());
    for n in order {
        *places += 1;
        let place = Place::new(args, store, *places);
        let result = drain_once(args, &place, n, &extra).await;
        place.remove().await?;
        let (rate, cpu, store_cpu, ops) = result?;
        println!("| {n} | {rate:.0} | {cpu:.3} | {store_cpu:.3} | {ops:.1} |");
    }
    Ok(())
}

async fn drain_once(
    args: &ClusterBenchArgs,
    place: &Place,
    n: usize,
    extra: &[String],
) -> anyhow::Result<(f64, f64, f64, f64)> {
    let (address, mut arrivals, gate) = receiver(true, Duration::ZERO).await?;
    let processes = Arc::new(Processes::start(place, n, extra).await?);
    processes.setup(&address, false).await?;
    while arrivals.try_recv().is_ok() {}
    gate.send_replace(false);
    // Publish through every process, 32 at a time.
    let next = Arc::new(AtomicU64::new(0));
    let mut publishers = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (processes, next, events) = (processes.clone(), next.clone(), args.events as u64);
        publishers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    return anyhow::Ok(());
                }
                let which = (i as usize) % processes.bases.len();
                processes
                    .post(
                        which,
                        "/v1/events",
                        json!({"action": "shop.sold", "payload": {"n": i}}),
                    )
                    .await?;
            }
        });
    }
    while let Some(done) = publishers.join_next().await {
        done??;
    }
    let cpu_before: f64 = processes.cpu_seconds().iter().sum();
    let ops_before = place.operations().await?;
    let store_cpu_before = place.cpu_seconds().await?;
    let started = Instant::now();
    gate.send_replace(true);
    let mut seen = 0;
    while seen < args.events {
        match tokio::time::timeout(Duration::from_secs(120), arrivals.recv()).await {
            Ok(Some((Some(_), _))) => seen += 1,
            Ok(Some((None, _))) => {}
            _ => bail!("only {seen} of {} events arrived", args.events),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu: f64 = processes.cpu_seconds().iter().sum::<f64>() - cpu_before;
    let store_cpu = place.cpu_seconds().await? - store_cpu_before;
    let ops = place.operations().await?.saturating_sub(ops_before);
    let events = args.events as f64;
    Ok((
        events / elapsed,
        cpu * 1000.0 / events,
        store_cpu * 1000.0 / events,
        ops as f64 / events,
    ))
}

async fn propagation(
    args: &ClusterBenchArgs,
    store: Store,
    places: &mut usize,
) -> anyhow::Result<()> {
    *places += 1;
    let place = Place::new(args, store, *places);
    let result = propagation_on(args, &place).await;
    place.remove().await?;
    let mut delays = result?;
    delays.sort_by(f64::total_cmp);
    println!(
        "\n{store:?}: propagation of a minted API key to two other processes, {} changes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.changes,
        quantile(&delays, 0.5),
        quantile(&delays, 0.99),
        delays.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}

async fn propagation_on(args: &ClusterBenchArgs, place: &Place) -> anyhow::Result<Vec<f64>> {
    let processes = Arc::new(Processes::start(place, 3, &args.serve_args).await?);
    let made = processes
        .post(
            0,
            "/v1/applications",
            json!({"application": "prop", "address": "http://prop.invalid"}),
        )
        .await?;
    let mut key = made["apikey"].as_str().context("no apikey")?.to_owned();
    // Every process knows the first key before the first change.
    for i in 0..3 {
        loop {
            let (s, _) = processes
                .call(
                    i,
                    reqwest::Method::GET,
                    "/v1/subscriptions",
                    Some(&key),
                    None,
                )
                .await?;
            if s == 200 {
                break;
            }
        }
    }
    let mut delays = Vec::new();
    for change in 0..args.changes {
        let at = change % 3;
        let minted = processes
            .post(at, "/v1/applications/prop/apikey", json!({}))
            .await?;
        let answered = Instant::now();
        let old = std::mem::replace(
            &mut key,
            minted["apikey"].as_str().context("no apikey")?.to_owned(),
        );
        let mut waits = tokio::task::JoinSet::new();
        for other in (0..3).filter(|i| *i != at) {
            let (processes, old) = (processes.clone(), old.clone());
            waits.spawn(async move {
                loop {
                    let (s, _) = processes
                        .call(
                            other,
                            reqwest::Method::GET,
                            "/v1/subscriptions",
                            Some(&old),
                            None,
                        )
                        .await?;
                    if s == 401 {
                        return anyhow::Ok(answered.elapsed().as_secs_f64() * 1000.0);
                    }
                    ensure!(
                        answered.elapsed() < Duration::from_secs(30),
                        "the old key still works on process {other} after 30 s"
                    );
                }
            });
        }
        while let Some(delay) = waits.join_next().await {
            delays.push(delay??);
        }
    }
    Ok(delays)
}

async fn failover(args: &ClusterBenchArgs, store: Store, places: &mut usize) -> anyhow::Result<()> {
    println!(
        "\n{store:?}: failover of an ordered subscription, kill -9 of its holder to the next delivery (serve args: {:?})",
        args.serve_args
    );
    let mut times = Vec::new();
    for trial in 0..args.trials {
        *places += 1;
        let place = Place::new(args, store, *places);
        let result = failover_once(args, &place).await;
        place.remove().await?;
        let ms = result?;
        println!("trial {}: {ms:.0} ms", trial + 1);
        times.push(ms);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "failover over {} trials: min {:.0} ms, median {:.0} ms, max {:.0} ms",
        times.len(),
        times.first().copied().unwrap_or(f64::NAN),
        quantile(&times, 0.5),
        times.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}

async fn failover_once(args: &ClusterBenchArgs, place: &Place) -> anyhow::Result<f64> {
    let (address, mut arrivals, _gate) = receiver(true, Duration::ZERO).await?;
    let mut processes = Processes::start(place, 3, &args.serve_args).await?;
    processes.setup(&address, true).await?;
    // The holder of the ordered subscription's lease, by pid.
    let holder_pid = loop {
        let (_, cluster) = processes
            .call(0, reqwest::Method::GET, "/v1/cluster", None, None)
            .await?;
        if let Some(owner) = cluster["ordered"][0]["process"].as_str() {
            let pid = cluster["processes"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["id"] == json!(owner)))
                .and_then(|p| p["pid"].as_u64())
                .context("the lease's owner is not listed")?;
            break pid as u32;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let victim = processes
        .children
        .iter()
        .position(|c| c.as_ref().is_some_and(|c| c.id() == holder_pid))
        .context("the lease's owner is none of the processes started")?;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    // Publishing through the survivors, about 200 a second.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (stop, http, bases) = (
            stop.clone(),
            processes.http.clone(),
            processes.bases.clone(),
        );
        let survivors = survivors.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let base = &bases[survivors[n as usize % survivors.len()]];
                let _ = http
                    .post(format!("{base}/v1/events"))
                    .header("content-type", "application/json")
                    .body(json!({"action": "shop.sold", "payload": {"n": n}}).to_string())
                    .send()
                    .await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Deliveries flowing, then the kill.
    let mut flowing = 0;
    while flowing < 50 {
        match tokio::time::timeout(Duration::from_secs(30), arrivals.recv()).await {
            Ok(Some((Some(_), _))) => flowing += 1,
            Ok(Some(_)) => {}
            _ => bail!("deliveries did not start"),
        }
    }
    if let Some(mut child) = processes.children[victim].take() {
        child.kill()?;
        let killed = Instant::now();
        child.wait()?;
        while arrivals.try_recv().is_ok() {}
        let after = loop {
            match tokio::time::timeout(Duration::from_secs(60), arrivals.recv()).await {
                Ok(Some((Some(_), at))) if at > killed => break at - killed,
                Ok(Some(_)) => {}
                _ => bail!("no delivery within 60 s of the kill"),
            }
        };
        stop.store(true, Ordering::Relaxed);
        let _ = publisher.await;
        return Ok(after.as_secs_f64() * 1000.0);
    }
    bail!("no process to kill")
}

async fn recovery(args: &ClusterBenchArgs, store: Store, places: &mut usize) -> anyhow::Result<()> {
    println!(
        "\n{store:?}: recovery of a killed process's deliveries (unordered, endpoint answers in 300 ms), kill -9 to the arrival of every accepted event (serve args: {:?})",
        args.serve_args
    );
    let mut times = Vec::new();
    for trial in 0..args.trials {
        *places += 1;
        let place = Place::new(args, store, *places);
        let result = recovery_once(args, &place).await;
        place.remove().await?;
        let (ms, late) = result?;
        println!(
            "trial {}: {ms:.0} ms ({late} events arrived over 3 s after the kill)",
            trial + 1
        );
        times.push(ms);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "recovery over {} trials: min {:.0} ms, median {:.0} ms, max {:.0} ms",
        times.len(),
        times.first().copied().unwrap_or(f64::NAN),
        quantile(&times, 0.5),
        times.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}

/// Returns the time from the kill to the last arrival, and how many
/// events arrived more than 3 s after the kill.
async fn recovery_once(args: &ClusterBenchArgs, place: &Place) -> anyhow::Result<(f64, usize)> {
    let (address, mut arrivals, _gate) = receiver(true, Duration::from_millis(300)).await?;
    let mut processes = Processes::start(place, 3, &args.serve_args).await?;
    processes.setup(&address, false).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let publisher = {
        let (stop, http, bases) = (
            stop.clone(),
            processes.http.clone(),
            processes.bases.clone(),
        );
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for turn in 0..bases.len() {
                    let base = &bases[(n as usize + turn) % bases.len()];
                    let sent = http
                        .post(format!("{base}/v1/events"))
                        .header("content-type", "application/json")
                        .body(json!({"action": "shop.sold", "payload": {"n": n}}).to_string())
                        .send()
                        .await;
                    if let Ok(r) = sent {
                        if r.status().as_u16() == 201 {
                            accepted.lock().map(|mut a| a.insert(n)).ok();
                        }
                        break;
                    }
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut arrived = std::collections::BTreeSet::new();
    while let Ok((n, _)) = arrivals.try_recv() {
        arrived.extend(n);
    }
    let Some(mut child) = processes.children[0].take() else {
        bail!("no process to kill");
    };
    child.kill()?;
    let killed = Instant::now();
    child.wait()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = publisher.await;
    let wanted = accepted.lock().map(|a| a.clone()).unwrap_or_default();
    let mut last = killed;
    let mut late = 0;
    while !wanted.iter().all(|n| arrived.contains(n)) {
        match tokio::time::timeout(Duration::from_secs(120), arrivals.recv()).await {
            Ok(Some((Some(n), at))) => {
                if arrived.insert(n) {
                    last = last.max(at);
                    if at.duration_since(killed) > Duration::from_secs(3) {
                        late += 1;
                    }
                }
            }
            Ok(Some(_)) => {}
            _ => bail!("events still missing 120 s after the kill"),
        }
    }
    Ok((last.duration_since(killed).as_secs_f64() * 1000.0, late))
}
