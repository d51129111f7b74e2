//! The server's accept loop: every connection under a header timeout (which
//! is also its keep-alive idle timeout), a cap on open connections in all
//! and per client address, and, when the cap is reached, room made by
//! closing the connection that has waited longest without a request in
//! flight, so connections that send nothing (or a header byte at a time)
//! cannot keep out callers that do.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

/// Limits of the connections the server holds.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most (`None`: from the process's file limit, see
    /// [`ConnectionLimits::resolved_max`]).
    pub max: Option<usize>,
    /// Open connections per client address at most (trusted proxies aside).
    pub per_client: usize,
    /// Time to send a request's headers, counted from the connection's start
    /// or from the previous answer: also how long an idle keep-alive
    /// connection is kept.
    pub header_timeout: Duration,
    /// Time to send a request's whole body.
    pub body_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max: None,
            per_client: DEFAULT_PER_CLIENT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// Default [`ConnectionLimits::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// Default [`ConnectionLimits::body_timeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ConnectionLimits::per_client`].
pub const DEFAULT_PER_CLIENT: usize = 512;
/// Fewest connections the derived cap allows.
const MIN_CONNECTIONS: usize = 32;

impl ConnectionLimits {
    /// The cap on open connections: the configured one, or three quarters
    /// of the file limit less `outgoing` (the webhook requests in flight),
    /// so that storage, outgoing requests and the broker's connections
    /// always have descriptors left.
    pub fn resolved_max(&self, file_limit: Option<u64>, outgoing: usize) -> usize {
        self.max.unwrap_or_else(|| {
            let limit = usize::try_from(file_limit.unwrap_or(1024)).unwrap_or(usize::MAX);
            (limit / 4 * 3)
                .saturating_sub(outgoing)
                .max(MIN_CONNECTIONS)
        })
    }
}

/// Raises the soft limit on open files to the hard limit, and returns the
/// limit now in force (`None` where it cannot be read).
pub fn raise_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if limit.current != limit.maximum
            && let Err(e) = setrlimit(Resource::Nofile, raised)
        {
            tracing::warn!(error = %e, "cannot raise the limit on open files");
            return limit.current;
        }
        getrlimit(Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The limit on open files in force.
pub fn file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// One open connection, as the table of connections sees it.
struct Entry {
    client: IpAddr,
    /// Requests in flight (an answer's body counts until it is sent).
    busy: Arc<AtomicUsize>,
    /// Cancelled to make room: the connection closes (at once if no request
    /// is in flight, after it otherwise).
    close: CancellationToken,
}

/// The open connections, oldest first (one closed to make room leaves
/// the table at once: it has no request in flight, so it closes at once).
#[derive(Default)]
struct Table {
    next: u64,
    open: std::collections::BTreeMap<u64, Entry>,
    per_client: HashMap<IpAddr, usize>,
}

impl Table {
    /// Closes the oldest connection without a request in flight (of
    /// `client` only, if given). Whether one was found.
    fn evict_idle(&mut self, client: Option<IpAddr>) -> bool {
        let victim = self
            .open
            .iter()
            .find(|(_, e)| {
                client.is_none_or(|c| c == e.client) && e.busy.load(Ordering::Acquire) == 0
            })
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.remove(id)) {
            Some(entry) => {
                entry.close.cancel();
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        if let Some(n) = self.per_client.get_mut(&entry.client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&entry.client);
            }
        }
        Some(entry)
    }
}

/// Admits, tracks and closes connections.
pub(crate) struct Gate {
    max: usize,
    per_client: usize,
    trusted: Vec<ipnet::IpNet>,
    table: Mutex<Table>,
}

/// Removes its connection from the table when the connection ends.
struct Admitted {
    gate: Arc<Gate>,
    id: u64,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut table = self
            .gate
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        table.remove(self.id);
    }
}

impl Gate {
    pub(crate) fn new(max: usize, per_client: usize, trusted: Vec<ipnet::IpNet>) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            per_client: per_client.max(1),
            trusted,
            table: Mutex::default(),
        })
    }

    /// Admits a connection from `client`, closing an idle one to make room
    /// if a cap is reached; `None` if none can be closed (every connection
    /// has a request in flight).
    fn admit(
        self: &Arc<Self>,
        client: IpAddr,
    ) -> Option<(Admitted, Arc<AtomicUsize>, CancellationToken)> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let counted = !self.trusted.iter().any(|net| net.contains(&client));
        let of_client = table.per_client.get(&client).copied().unwrap_or(0);
        if counted && of_client >= self.per_client && !table.evict_idle(Some(client)) {
            return None;
        }
        if table.open.len() >= self.max && !table.evict_idle(None) {
            return None;
        }
        let id = table.next;
        table.next += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let close = CancellationToken::new();
        table.open.insert(
            id,
            Entry {
                client,
                busy: busy.clone(),
                close: close.clone(),
            },
        );
        *table.per_client.entry(client).or_default() += 1;
        Some((
            Admitted {
                gate: self.clone(),
                id,
            },
            busy,
            close,
        ))
    }
}

/// Counts a request in flight until its answer's body is sent.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(busy: &Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::AcqRel);
        Self(busy.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body that keeps its request counted until it is sent.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Accepts connections until `shutdown` is cancelled, then lets open ones
/// finish their requests and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    gate: Arc<Gate>,
    header_timeout: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors (or another passing failure): wait
                // rather than spin; open connections are closing meanwhile.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let Some((admitted, busy, close)) = gate.admit(peer.ip()) else {
            tracing::debug!(%peer, "connection refused: every connection has a request in flight");
            drop(tcp);
            continue;
        };
        // Small answers (a long poll's wake-up, a streamed event) must not
        // wait for Nagle's algorithm and the peer's delayed ack.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let (app, shutdown) = (app.clone(), shutdown.clone());
        let gated = (admitted, busy, close);
        match tls.clone() {
            None => tracker.spawn(connection(tcp, peer, app, gated, header_timeout, shutdown)),
            Some(acceptor) => tracker.spawn(async move {
                // The handshake is bounded like a request's headers, so a
                // connection that never finishes it cannot be held open.
                match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        connection(stream, peer, app, gated, header_timeout, shutdown).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }),
        };
    }
    // New callers are refused at once rather than queued behind the shutdown.
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

async fn connection<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    (admitted, busy, close): (Admitted, Arc<AtomicUsize>, CancellationToken),
    header_timeout: Duration,
    shutdown: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let counted = busy.clone();
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            let in_flight = InFlight::new(&counted);
            request.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            async move {
                let answer = app.call(request.map(Body::new)).await?;
                Ok::<_, std::convert::Infallible>(answer.map(|inner| {
                    Body::new(TrackedBody {
                        inner,
                        _in_flight: in_flight,
                    })
                }))
            }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                break;
            }
            () = close.cancelled(), if !closing => {
                if busy.load(Ordering::Acquire) == 0 {
                    break;
                }
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    drop(admitted);
}
