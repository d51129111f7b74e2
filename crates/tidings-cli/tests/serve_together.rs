//! Several `tidings serve` processes started at the same instant on one
//! empty shared store (a Redis prefix, a PostgreSQL schema): every one of
//! them comes up, round after round (issue 18, start-up).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;

const PROCESSES: usize = 3;
const ROUNDS: usize = 20;

/// Starts `PROCESSES` servers on `broker` together and waits until each
/// answers `/readyz` or exits; returns how many came up, and the exit
/// messages of those that did not.
async fn start_together(http: &reqwest::Client, broker: &str) -> (usize, Vec<String>) {
    let ports: Vec<u16> = (0..PROCESSES).map(|_| free_port()).collect();
    let mut children: Vec<Child> = ports
        .iter()
        .map(|port| {
            Command::new(env!("CARGO_BIN_EXE_tidings"))
                .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
                .env("TIDINGS_BROKER", broker)
                .env("TIDINGS_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut up = 0;
    let mut failures = Vec::new();
    for (child, port) in children.iter_mut().zip(&ports) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                && r.status().is_success()
            {
                up += 1;
                break;
            }
            if child.try_wait().unwrap().is_some() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    use std::io::Read;
                    let _ = pipe.read_to_string(&mut stderr);
                }
                failures.push(stderr);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a server neither came up nor exited"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    (up, failures)
}

async fn every_round_all_come_up(broker_of_round: impl Fn(usize) -> String) {
    let http = reqwest::Client::new();
    for round in 0..ROUNDS {
        let broker = broker_of_round(round);
        let (up, failures) = start_together(&http, &broker).await;
        assert_eq!(
            up, PROCESSES,
            "round {round}: {up} of {PROCESSES} came up; the others said: {failures:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_started_together_on_one_postgresql_schema_all_come_up() {
    let url = tidings_postgres::testing::postgres_url();
    if let Err(e) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        tidings_postgres::testing::skip_or_fail::<()>(&e);
        return;
    }
    let schemas: Vec<_> = (0..ROUNDS)
        .map(|_| tidings_postgres::testing::TestSchema::fresh())
        .collect();
    every_round_all_come_up(|round| schemas[round].url()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_started_together_on_one_redis_prefix_all_come_up() {
    let Some(redis) = common::RedisPrefix::new("together") else {
        return;
    };
    every_round_all_come_up(|round| redis.url(&round.to_string())).await;
}
