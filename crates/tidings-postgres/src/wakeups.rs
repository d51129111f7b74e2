//! Waking blocked receives when a queue gets work: at once for sends in
//! this process, by LISTEN/NOTIFY for sends in others.
//!
//! A send announces its queue after its commit. The announcement wakes this
//! process's waiters directly and goes to a notifier task, which sends one
//! `NOTIFY` for every queue announced since its last one (so concurrent
//! sends share it, and no send's transaction takes PostgreSQL's notify
//! lock). A listener task holds a connection of its own that LISTENs;
//! whenever it (re)connects it wakes every waiter, who then look again,
//! so notifications lost while it was away cost a look, never a message.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Versions per queue id: a waiter notes the version before it looks, and
/// waits for a newer one.
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    queues: Mutex<HashMap<i64, watch::Sender<u64>>>,
}

impl Wakeups {
    /// A receiver of the queue's version, marked seen: `changed()`
    /// resolves at the next wakeup after this call.
    pub(crate) fn watch(&self, queue: i64) -> watch::Receiver<u64> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = queues.entry(queue).or_insert_with(|| watch::channel(0).0);
        let mut receiver = sender.subscribe();
        receiver.borrow_and_update();
        receiver
    }

    /// Wakes the queue's waiters in this process.
    pub(crate) fn wake(&self, queue: i64) {
        let queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = queues.get(&queue) {
            sender.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Wakes every waiter in this process (and forgets queues nobody waits on).
    pub(crate) fn wake_all(&self) {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        queues.retain(|_, sender| sender.receiver_count() > 0);
        for sender in queues.values() {
            sender.send_modify(|v| *v = v.wrapping_add(1));
        }
    }
}

/// Announces queues with new work: wakes local waiters now, and has the
/// notifier tell other processes.
#[derive(Debug, Clone)]
pub(crate) struct Announcer {
    wakeups: Arc<Wakeups>,
    notify: mpsc::UnboundedSender<i64>,
}

impl Announcer {
    pub(crate) fn announce(&self, queue: i64) {
        self.wakeups.wake(queue);
        let _ = self.notify.send(queue);
    }
}

/// The channel a schema's notifications use.
pub(crate) fn channel(schema: &str) -> String {
    format!("tidings_{schema}")
}

/// Starts the notifier and the listener. Both stop when the returned
/// handles are aborted. Notifications carry a token of this broker's, so
/// that its listener passes over its own (their waiters were woken already).
pub(crate) fn start(
    wakeups: Arc<Wakeups>,
    pool: deadpool_postgres::Pool,
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    schema: &str,
) -> (Announcer, [JoinHandle<()>; 2]) {
    let (notify, queued) = mpsc::unbounded_channel();
    let channel = channel(schema);
    let token = token();
    let notifier = tokio::spawn(notifier(pool, channel.clone(), token.clone(), queued));
    let listener = tokio::spawn(listener(config, tls, channel, token, wakeups.clone()));
    (Announcer { wakeups, notify }, [notifier, listener])
}

/// A token no other broker has: the process, the time, and where this
/// broker's token lives in memory.
fn token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let here = Box::new(0u8);
    format!(
        "{:x}.{nanos:x}.{:p}",
        std::process::id(),
        std::ptr::from_ref(here.as_ref())
    )
}

/// Sends one NOTIFY per batch of announced queues. It is only a hint, so
/// it does not wait for the disk (`synchronous_commit` off) and a failed
/// one is not retried: listeners that miss it look again when they
/// reconnect, or when their wait ends.
async fn notifier(
    pool: deadpool_postgres::Pool,
    channel: String,
    token: String,
    mut queued: mpsc::UnboundedReceiver<i64>,
) {
    while let Some(first) = queued.recv().await {
        let mut ids = BTreeSet::from([first]);
        while let Ok(more) = queued.try_recv() {
            ids.insert(more);
        }
        let ids = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let payload = format!("{token}:{ids}");
        let sql = format!(
            "BEGIN; SET LOCAL synchronous_commit TO OFF; NOTIFY \"{channel}\", '{payload}'; COMMIT;"
        );
        match pool.get().await {
            Ok(client) => {
                if let Err(e) = client.batch_execute(&sql).await {
                    tracing::debug!(error = %e, "a queue notification was not sent");
                    let _ = client.batch_execute("ROLLBACK").await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "no connection to send a queue notification"),
        }
    }
}

/// Holds a LISTEN connection, reconnecting with a growing pause.
async fn listener(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    channel: String,
    token: String,
    wakeups: Arc<Wakeups>,
) {
    let mut pause = Duration::from_millis(50);
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let (found, mut notes) = mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if let AsyncMessage::Notification(n) = message
                            && found.send(n.payload().to_owned()).is_err()
                        {
                            break;
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN \"{channel}\""))
                    .await
                    .is_ok()
                {
                    pause = Duration::from_millis(50);
                    // Whatever was sent while nobody listened.
                    wakeups.wake_all();
                    while let Some(payload) = notes.recv().await {
                        let Some((from, ids)) = payload.split_once(':') else {
                            continue;
                        };
                        if from == token {
                            continue;
                        }
                        for id in ids.split(',').filter_map(|id| id.parse().ok()) {
                            wakeups.wake(id);
                        }
                    }
                }
                driver.abort();
                tracing::debug!("the queue notification listener lost its connection");
                wakeups.wake_all();
            }
            Err(e) => tracing::debug!(error = %e, "the queue notification listener cannot connect"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
