//! A client keeps trying to connect while the server is away, and fails
//! with a typed error once its patience is over.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use tidings_core::{Broker, Error, QueueConfig, QueueName};
use tidings_http::HttpBroker;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_while_the_server_is_down_goes_through_once_it_is_up() {
    let port = free_port();
    let client = HttpBroker::connect(&format!("http://127.0.0.1:{port}")).unwrap();
    let queue = QueueName::new("orders").unwrap();
    let call = {
        let (client, queue) = (client.clone(), queue.clone());
        tokio::spawn(async move { client.create_queue(&queue, QueueConfig::default()).await })
    };
    // The server comes up after the call started (the call is retrying).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!call.is_finished());
    let _server = common::TestServer::start_on(port).await;
    assert!(
        call.await.unwrap().unwrap(),
        "created once the server was up"
    );
    assert_eq!(client.list_queues().await.unwrap(), vec![queue]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stays_away_is_a_typed_error() {
    let port = free_port();
    let client = HttpBroker::connect(&format!("http://127.0.0.1:{port}"))
        .unwrap()
        .reconnect_for(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let err = client.list_queues().await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "it kept trying"
    );
}

/// A server that takes a request and drops the connection without an
/// answer: a write's outcome is unknown (it may have been applied), a
/// read's is simply unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_taken_but_not_answered_has_an_unknown_outcome() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::Read;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            drop(stream);
        }
    });
    let client = HttpBroker::connect(&format!("http://127.0.0.1:{port}"))
        .unwrap()
        .reconnect_for(Duration::from_millis(300));
    let queue = QueueName::new("orders").unwrap();
    let err = client
        .create_queue(&queue, QueueConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err:?}");
    let err = client.list_queues().await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
}
