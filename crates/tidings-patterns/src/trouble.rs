//! How a worker's receive loop rides out a broker that fails: one log line
//! per incident, then quiet retries with backoff (100 ms doubling to 5 s),
//! and a line when it works again.

use std::fmt::Display;
use std::time::Duration;

/// The state of one receive loop.
#[derive(Debug, Default)]
pub(crate) struct Trouble {
    wait: Option<Duration>,
}

impl Trouble {
    /// A receive failed: logs the first failure of an incident and waits
    /// before the next try.
    pub(crate) async fn failed(
        &mut self,
        worker: &str,
        place: &(dyn Display + Sync),
        error: &(dyn Display + Sync),
    ) {
        let wait = match self.wait {
            None => {
                tracing::warn!(%place, %error, "{worker} cannot receive; retrying");
                Duration::from_millis(100)
            }
            Some(w) => (w * 2).min(Duration::from_secs(5)),
        };
        self.wait = Some(wait);
        tokio::time::sleep(wait).await;
    }

    /// A receive worked: ends the incident, if there was one.
    pub(crate) fn recovered(&mut self, worker: &str, place: &(dyn Display + Sync)) {
        if self.wait.take().is_some() {
            tracing::info!(%place, "{worker} receiving again");
        }
    }
}
