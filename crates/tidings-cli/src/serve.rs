//! `tidings serve`: the event hub over HTTP on the chosen broker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use tidings::Broker;
use tidings_hub::hub::RetentionPolicy;
use tidings_hub::sealing::Sealer;
use tidings_hub::{DeliveryConfig, DestinationPolicy, Hub, HubConfig};
use tidings_server::tls::Tls;
use tidings_server::{AuthConfig, ConnectionLimits, Server, ServerConfig};
use tokio_util::sync::CancellationToken;

/// Options of `tidings serve`: flags, `TIDINGS_*` variables, or keys of
/// the `--config` file (the field names: `header_timeout = "20s"`). A flag
/// or variable given overrides the file, which overrides the defaults.
#[derive(Debug, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// A TOML file of these options (docs/configuration.md; keys are the
    /// options' names with `_`: `admin_key`, `allow_destinations`,
    /// `header_timeout`...). Flags and TIDINGS_* variables given override
    /// it; an unknown key is an error naming it.
    #[arg(long, env = "TIDINGS_CONFIG")]
    #[serde(skip)]
    pub config: Option<std::path::PathBuf>,
    /// The broker, from the file (`--broker`/`TIDINGS_BROKER` override it).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Address to listen on. Without an admin key only loopback is allowed.
    #[arg(long, env = "TIDINGS_BIND", default_value = "127.0.0.1:3310")]
    pub bind: SocketAddr,
    /// The admin key (header `x-amebo-admin-key`). Without one the server
    /// runs in protected mode: loopback only, loopback callers are admin.
    #[arg(long, env = "TIDINGS_ADMIN_KEY", hide_env_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_key: Option<String>,
    /// A token that reads /metrics (`Authorization: Bearer <token>`), for a
    /// scraper that should not hold the admin key.
    #[arg(long, env = "TIDINGS_METRICS_TOKEN", hide_env_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<String>,
    /// Let anyone read /metrics, even with an admin key (it names every
    /// application, action and subscription).
    #[arg(long, env = "TIDINGS_PUBLIC_METRICS")]
    pub public_metrics: bool,
    /// Also accept Amebo's request signatures, over the body alone. Unsafe:
    /// a captured signed request can be replayed, as another method and
    /// path too. For clients that cannot sign method, path and time yet.
    #[arg(long, env = "TIDINGS_ACCEPT_LEGACY_SIGNATURES")]
    pub accept_legacy_signatures: bool,
    /// A proxy (address or CIDR, repeatable) whose X-Forwarded-For is
    /// believed for the client's address (logs, login limits); never for
    /// credentials.
    #[arg(long = "trusted-proxy", env = "TIDINGS_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    #[serde(with = "nets")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// A network (address or CIDR, repeatable) webhooks may be delivered to
    /// although it is not public (with an admin key, only public addresses
    /// are by default).
    #[arg(long = "allow-destination", env = "TIDINGS_ALLOW_DESTINATIONS", value_delimiter = ',', value_parser = parse_net)]
    #[serde(with = "nets")]
    pub allow_destinations: Vec<ipnet::IpNet>,
    /// Let webhooks go to any address: loopback, private networks,
    /// link-local (cloud metadata) included. The hub's own address stays
    /// refused. Implied in protected mode.
    #[arg(long, env = "TIDINGS_ALLOW_PRIVATE_DESTINATIONS")]
    pub allow_private_destinations: bool,
    /// Open connections at most (default: three quarters of the file limit,
    /// raised to its hard maximum at start, less --max-in-flight). When it
    /// is reached, the connection idle longest is closed to make room.
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Open connections per client address at most (trusted proxies aside).
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS_PER_CLIENT", default_value_t = tidings_server::connections::DEFAULT_PER_CLIENT)]
    pub max_connections_per_client: usize,
    /// Time a caller has to send a request's headers, from the connection's
    /// start or the previous answer (so also how long an idle keep-alive
    /// connection is kept).
    #[arg(long, env = "TIDINGS_HEADER_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time a caller has to send a request's whole body (then 408).
    #[arg(long, env = "TIDINGS_BODY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Actions an application may have.
    #[arg(
        long,
        env = "TIDINGS_MAX_ACTIONS_PER_APPLICATION",
        default_value_t = 1000
    )]
    pub max_actions_per_application: usize,
    /// Largest schema of an action, bytes of JSON.
    #[arg(long, env = "TIDINGS_MAX_SCHEMA_BYTES", default_value_t = 64 * 1024)]
    pub max_schema_bytes: usize,
    /// Bytes of schema an application's actions may have together (with
    /// the number of actions, this bounds the memory compiled schemas take).
    #[arg(long, env = "TIDINGS_MAX_SCHEMA_BYTES_PER_APPLICATION", default_value_t = 4 * 1024 * 1024)]
    pub max_schema_bytes_per_application: usize,
    /// Largest request body, in bytes.
    #[arg(long, env = "TIDINGS_BODY_LIMIT", default_value_t = tidings_server::DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
    /// Timeout of one webhook attempt.
    #[arg(long, env = "TIDINGS_DELIVERY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Webhook requests in flight per subscription that does not set its
    /// own `concurrency`, in this process (a subscription's own
    /// `concurrency` is a total, shared out among the live processes).
    #[arg(long, env = "TIDINGS_PER_SUBSCRIPTION", default_value_t = 16)]
    pub per_subscription: usize,
    /// Webhook requests in flight in total.
    #[arg(long, env = "TIDINGS_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,
    /// An ordered subscription is delivered by one process at a time (the
    /// holder of its lease); how long the others wait, after the holder
    /// stopped renewing it, before one takes over.
    #[arg(long, env = "TIDINGS_ORDERED_LEASE", default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub ordered_lease: Duration,
    /// How often the console reads the hub's activity for its overview's
    /// charts (each reading: one scan of the processes' records and the
    /// counters).
    #[arg(long, env = "TIDINGS_CONSOLE_EVERY", default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub console_every: Duration,
    /// How often this process reports itself to the others sharing its
    /// store (`GET /v1/cluster`); after three missed reports it is shown as
    /// not live and its share of subscriptions' concurrency goes to them.
    #[arg(long, env = "TIDINGS_HEARTBEAT", default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Attempts per delivery for subscriptions that do not set `max_retries`.
    #[arg(long, env = "TIDINGS_DEFAULT_MAX_RETRIES", default_value_t = 8)]
    pub default_max_retries: u32,
    /// A file of keys that seal every stored secret (applications'
    /// secrets, subscriptions' signing keys, sessions) with
    /// ChaCha20-Poly1305: one key per line, 64 hex digits (`openssl rand
    /// -hex 32`). The first seals; the others only open, while the hub
    /// re-seals everything with the first in the background (to rotate:
    /// put a new key first, restart, and drop the old one once the log says
    /// every secret is sealed with the first).
    #[arg(long, env = "TIDINGS_SECRETS_KEY_FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_key_file: Option<std::path::PathBuf>,
    /// How long events are kept (`30d`, `forever`); an action's own
    /// `retention` wins. An event goes only once its deliveries are settled.
    #[arg(long, env = "TIDINGS_RETAIN_EVENTS", default_value = "30d", value_parser = parse_keep)]
    pub retain_events: String,
    /// How long delivered gists are kept after their delivery.
    #[arg(long, env = "TIDINGS_RETAIN_DELIVERED", default_value = "7d", value_parser = parse_keep)]
    pub retain_delivered: String,
    /// How long failed gists (and their dead letters) are kept after they died.
    #[arg(long, env = "TIDINGS_RETAIN_FAILED", default_value = "30d", value_parser = parse_keep)]
    pub retain_failed: String,
    /// How long a deduper is remembered; an action's own `dedup_window` wins.
    #[arg(long, env = "TIDINGS_DEDUP_WINDOW", default_value = "24h", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Free bytes on the storage's disk under which /readyz and /metrics
    /// warn (`1GiB`, `500MiB`, bytes; `0`: never).
    #[arg(long, env = "TIDINGS_DISK_FREE_WARNING", default_value = "1GiB", value_parser = parse_bytes)]
    pub disk_free_warning: String,
    /// How long audit log entries are kept.
    #[arg(long, env = "TIDINGS_RETAIN_AUDIT", default_value = "365d", value_parser = parse_keep)]
    pub retain_audit: String,
    /// Time between retention sweeps.
    #[arg(long, env = "TIDINGS_RETENTION_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// Records a retention sweep removes per transaction.
    #[arg(long, env = "TIDINGS_RETENTION_BATCH", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub retention_batch: u32,
    /// How long a sweep rests after each batch, as a multiple of the time
    /// the batch took: 1 keeps a large purge to half of one core and out of
    /// the way of publishes and deliveries; 0 removes as fast as it can.
    #[arg(long, env = "TIDINGS_RETENTION_REST", default_value_t = 1.0, value_parser = parse_rest)]
    pub retention_rest: f64,
    /// Serve HTTPS with this certificate chain (PEM); with --tls-key.
    /// Both files are read again on SIGHUP (new connections get the new
    /// certificate; a reload that fails keeps the old one).
    #[arg(long, env = "TIDINGS_TLS_CERT", requires = "tls_key")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TIDINGS_TLS_KEY", requires = "tls_cert")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<std::path::PathBuf>,
}

/// Runs the server until Ctrl-C or SIGTERM.
pub async fn run(broker: Arc<dyn Broker>, args: ServeArgs) -> anyhow::Result<()> {
    let file_limit = tidings_server::connections::raise_file_limit();
    let sealer = match &args.secrets_key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the secrets key file {}", path.display()))?;
            Sealer::parse(&text)
                .map_err(|e| anyhow::anyhow!("secrets key file {}: {e}", path.display()))?
        }
        None => Sealer::none(),
    };
    match sealer.current_id() {
        Some(key) => tracing::info!(key, "stored secrets are sealed (--secrets-key-file)"),
        None if args.admin_key.is_some() => tracing::warn!(
            "stored secrets (applications' secrets, signing keys, sessions) are kept in clear: \
             anyone who reads the data directory or the Redis keys has them; give --secrets-key-file"
        ),
        None => {}
    }
    let hub = Hub::open(
        broker,
        HubConfig {
            default_max_retries: args.default_max_retries,
            attempt_timeout: args.delivery_timeout,
            destinations: DestinationPolicy {
                allow_private: args.allow_private_destinations,
                allowed: args.allow_destinations.clone(),
            },
            max_actions_per_application: args.max_actions_per_application,
            max_schema_bytes: args.max_schema_bytes,
            max_schema_bytes_per_application: args.max_schema_bytes_per_application,
            sealer: Arc::new(sealer),
            disk_free_warning: Some(bytes(&args.disk_free_warning)?).filter(|b| *b > 0),
            heartbeat: args.heartbeat.max(std::time::Duration::from_millis(10)),
            retention: RetentionPolicy {
                events: keep(&args.retain_events)?,
                delivered: keep(&args.retain_delivered)?,
                failed: keep(&args.retain_failed)?,
                dedup_window: args.dedup_window,
                audit: keep(&args.retain_audit)?,
                interval: args.retention_interval,
                batch: args.retention_batch as usize,
                rest: args.retention_rest,
            },
            ..HubConfig::default()
        },
    )
    .await
    .context("cannot open the event hub")?;
    let protected = args.admin_key.is_none();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(
            Tls::load(cert, key).context("cannot use the TLS certificate")?,
        )),
        _ => None,
    };
    let server = Server::bind(
        hub,
        ServerConfig {
            bind: args.bind,
            auth: AuthConfig {
                admin_key: args.admin_key.filter(|k| !k.is_empty()),
                metrics_token: args.metrics_token.filter(|t| !t.is_empty()),
                public_metrics: args.public_metrics,
                accept_legacy_signatures: args.accept_legacy_signatures,
                trusted_proxies: args.trusted_proxies,
            },
            body_limit: args.body_limit,
            delivery: DeliveryConfig {
                per_subscription: args.per_subscription,
                global: args.max_in_flight,
                lease_ttl: args.ordered_lease,
                ..DeliveryConfig::default()
            },
            connections: ConnectionLimits {
                max: args.max_connections,
                per_client: args.max_connections_per_client,
                header_timeout: args.header_timeout,
                body_timeout: args.body_timeout,
            },
            tls,
            console_every: args.console_every,
        },
    )
    .await?;
    if let Some(tls) = server.tls() {
        tokio::spawn(reload_on_hangup(tls));
    }
    let addr = server.local_addr()?;
    tracing::info!(
        %addr,
        mode = if protected { "protected (loopback callers are admin)" } else { "admin key required" },
        scheme = if server.tls().is_some() { "https" } else { "http" },
        max_connections = server.max_connections(),
        file_limit = file_limit.map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
        "tidings serve is listening"
    );
    if args.accept_legacy_signatures {
        tracing::warn!(
            "--accept-legacy-signatures: requests signed over the body alone are accepted; a captured one can be replayed"
        );
    }
    if args.allow_private_destinations && !protected {
        tracing::warn!(
            "--allow-private-destinations: webhooks may go to loopback, private and link-local addresses (cloud metadata included)"
        );
    }
    for net in &args.allow_destinations {
        tracing::warn!(%net, "--allow-destination: webhooks may go to this non-public network");
    }
    if args.public_metrics && !protected {
        tracing::warn!(
            "--public-metrics: /metrics answers anyone, and names every application, action and subscription"
        );
    }
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests and delivery attempts");
        stop.cancel();
    });
    server.run(stopped).await?;
    Ok(())
}

/// Reads the TLS certificate and key again at each SIGHUP.
async fn reload_on_hangup(tls: Arc<Tls>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: the TLS certificate is not reloaded");
            return;
        };
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays in use")
                }
            }
        }
    }
    #[cfg(not(unix))]
    drop(tls);
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Checks `--retention-rest`: a finite multiple from 0 to 100.
fn parse_rest(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rest) if (0.0..=100.0).contains(&rest) => Ok(rest),
        _ => Err(format!(
            "{text:?} is not a rest ratio (a number from 0 to 100, such as 1 or 0.5)"
        )),
    }
}

/// A retention: a duration, or `forever` (`None`).
fn keep(text: &str) -> anyhow::Result<Option<Duration>> {
    match text.trim() {
        "forever" => Ok(None),
        other => humantime::parse_duration(other).map(Some).map_err(|e| {
            anyhow::anyhow!("retention {other:?}: {e} (a duration such as 30d, or forever)")
        }),
    }
}

/// A size: bytes, or a number with `KiB`, `MiB`, `GiB` or `TiB`.
fn bytes(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        anyhow::anyhow!("size {text:?}: a number of bytes, or with KiB, MiB, GiB, TiB")
    })?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        other => anyhow::bail!("size {text:?}: unknown unit {other:?} (KiB, MiB, GiB, TiB)"),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| anyhow::anyhow!("size {text:?} is too large"))
}

/// Checks a size flag.
fn parse_bytes(text: &str) -> Result<String, String> {
    bytes(text)
        .map(|_| text.trim().to_owned())
        .map_err(|e| e.to_string())
}

/// Checks a retention flag.
fn parse_keep(text: &str) -> Result<String, String> {
    keep(text)
        .map(|_| text.trim().to_owned())
        .map_err(|e| e.to_string())
}

/// An address (a network of one) or a CIDR network.
fn parse_net(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or a CIDR network"))
}

/// Networks in a config file: addresses or CIDR networks, as the flags take them.
mod nets {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(nets: &[ipnet::IpNet], s: S) -> Result<S::Ok, S::Error> {
        let texts: Vec<String> = nets.iter().map(ToString::to_string).collect();
        texts.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| super::parse_net(text).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Settles the options of `tidings serve`: the defaults, then the
/// `--config` file, then what was given as flags or `TIDINGS_*` variables
/// (`given`: the clap ids whose value came from those). Returns them and
/// the broker URL (the file's `broker` unless `--broker` or
/// `TIDINGS_BROKER` was given).
pub fn settle(
    args: ServeArgs,
    given: &[String],
    broker: String,
    broker_given: bool,
) -> anyhow::Result<(ServeArgs, String)> {
    use figment::Figment;
    use figment::providers::{Format, Serialized, Toml};
    let Some(path) = args.config.clone() else {
        return Ok((args, broker));
    };
    let all = serde_json::to_value(&args).context("cannot read the options")?;
    let explicit: serde_json::Map<String, serde_json::Value> = all
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .filter(|(key, _)| given.iter().any(|g| g == *key))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut figment = Figment::from(Serialized::defaults(&args))
        .merge(Toml::file_exact(&path))
        .merge(Serialized::defaults(explicit));
    if broker_given {
        figment = figment.merge(Serialized::default("broker", &broker));
    }
    let mut settled: ServeArgs = figment
        .extract()
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
    settled.config = Some(path);
    let broker = settled.broker.take().unwrap_or(broker);
    Ok((settled, broker))
}
