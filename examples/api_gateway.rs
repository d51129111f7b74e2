//! The seeds' API gateway: one entry point that routes requests to internal
//! services through queues and waits for their replies, without the seeds'
//! 100 ms polling loop (a reply wakes its caller at once).
//!
//! The order service answers `orders.create` and `orders.status`; the
//! payment service answers `payments.status`; the inventory service is
//! down. The gateway creates an order, asks for its status, then gathers an
//! order view from all three services in parallel: it returns what it got,
//! marks what failed, and its circuit breaker stops calling the dead
//! inventory service after a few timeouts.
//!
//!     cargo run --example api_gateway                                   # embedded engine
//!     cargo run --example api_gateway -- --redis redis://127.0.0.1:6379  # Redis
//!     cargo run --example api_gateway -- --postgres postgres://postgres@127.0.0.1/postgres  # PostgreSQL

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tidings_patterns::breaker::{BreakerConfig, CircuitBreaker};
use tidings_patterns::resilience::{CallPolicy, PolicyError, RetryPolicy};
use tidings_patterns::rpc::{Gateway, Rpc};

#[derive(Debug, Deserialize)]
struct CreateOrder {
    user_id: String,
    items: Vec<Value>,
    shipping_address: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
    status: String,
    message: String,
}

#[derive(Debug, Deserialize)]
struct OrderRef {
    order_id: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let setup = common::broker("api-gateway").await?;
    println!("API gateway example on {}\n", setup.on);

    // The order service (its own Rpc: in production, its own process).
    let order_rpc = Rpc::new(setup.broker.clone());
    let create = order_rpc
        .serve("orders", "create", |r: CreateOrder| async move {
            if r.items.is_empty() {
                return Err("an order needs at least one item".to_owned());
            }
            println!(
                "[orders] creating an order of {} items for {} to {}",
                r.items.len(),
                r.user_id,
                r.shipping_address
            );
            Ok(OrderCreated {
                order_id: common::short_id("order"),
                status: "created".into(),
                message: "Order created successfully".into(),
            })
        })
        .await?;
    let status = order_rpc
        .serve("orders", "status", |r: OrderRef| async move {
            println!("[orders] status of {}", r.order_id);
            Ok::<_, String>(json!({"order_id": r.order_id, "status": "processing"}))
        })
        .await?;
    let payment_rpc = Rpc::new(setup.broker.clone());
    let payments = payment_rpc
        .serve("payments", "status", |r: OrderRef| async move {
            Ok::<_, String>(json!({"order_id": r.order_id, "payment": "authorized"}))
        })
        .await?;

    // The gateway: a policy per service, each with its own breaker.
    let breaker = |failures| {
        Arc::new(CircuitBreaker::new(BreakerConfig {
            failure_threshold: failures,
            recovery_timeout: Duration::from_secs(30),
            success_threshold: 1,
        }))
    };
    let inventory_breaker = breaker(2);
    let gateway_rpc = Rpc::new(setup.broker.clone());
    let gateway = Gateway::new(
        gateway_rpc.clone(),
        CallPolicy::new()
            .timeout(Duration::from_secs(5))
            .retry(RetryPolicy::new(3))
            .breaker(breaker(5)),
    )
    .with_policy(
        "inventory",
        CallPolicy::new()
            .timeout(Duration::from_millis(200))
            .breaker(inventory_breaker.clone()),
    );

    let created: OrderCreated = gateway
        .call(
            "orders",
            "create",
            &json!({
                "user_id": "user-12345",
                "items": [
                    {"product_id": "prod-789", "quantity": 2, "price": 29.99},
                    {"product_id": "prod-456", "quantity": 1, "price": 49.99}
                ],
                "shipping_address": "123 Main St, Anytown, US 12345"
            }),
        )
        .await?;
    println!(
        "\nOrder creation response: {}",
        serde_json::to_string_pretty(&created)?
    );

    let state: Value = gateway
        .call("orders", "status", &json!({"order_id": created.order_id}))
        .await?;
    println!(
        "\nOrder status response: {}",
        serde_json::to_string_pretty(&state)?
    );

    let refused: Result<Value, _> = gateway
        .call(
            "orders",
            "create",
            &json!({"user_id": "u", "items": [], "shipping_address": "-"}),
        )
        .await;
    if let Err(e) = refused {
        println!("\nAn order without items: {e}");
    }

    // The order view, from three services at once; inventory is down.
    for attempt in 1..=3 {
        let id = json!({"order_id": created.order_id});
        let view = gateway
            .gather([
                ("order", "orders", "status", id.clone()),
                ("payment", "payments", "status", id.clone()),
                ("inventory", "inventory", "reservation", id),
            ])
            .await;
        println!("\nOrder view, request {attempt}:");
        for (part, result) in &view {
            match result {
                Ok(v) => println!("  {part}: {v}"),
                Err(PolicyError::Rejected(r)) => {
                    println!(
                        "  {part}: unavailable (circuit open, retry in {:.0?})",
                        r.retry_after
                    )
                }
                Err(e) => println!("  {part}: unavailable ({e})"),
            }
        }
    }
    println!("\ninventory breaker: {:?}", inventory_breaker.state());

    for server in [create, status, payments] {
        server.stop().await;
    }
    for rpc in [order_rpc, payment_rpc, gateway_rpc] {
        rpc.close().await;
    }
    setup.clean_up().await?;
    println!("\nAPI Gateway example completed");
    Ok(())
}
