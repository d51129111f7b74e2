//! The seeds' event-driven e-commerce system on the typed event bus: an
//! order service, a payment service, a shipping service and a notification
//! service, each with its own durable subscription. Three orders go through
//! creation → payment → shipping; the run ends when all three are shipped
//! and notified (no sleeps), then prints each order's final state.
//!
//!     cargo run --example ecommerce                                   # embedded engine
//!     cargo run --example ecommerce -- --redis redis://127.0.0.1:6379  # Redis
//!     cargo run --example ecommerce -- --postgres postgres://postgres@127.0.0.1/postgres  # PostgreSQL
//!     cargo run --example ecommerce -- --http http://127.0.0.1:3310    # a running tidings serve
//!
//! With `--processes` (and `--http`, `--redis` or `--postgres`) the payment, shipping and
//! notification services each run in a process of their own (this example,
//! started again with `--service NAME`), talking through the one broker.
//!
//! Unlike the seeds, subscriptions live in the broker (a publisher in
//! another process reaches them), orders are records in the broker, not a
//! dict in one process, and a failing handler is retried before its event is
//! dead-lettered.

mod common;

use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tidings::{Broker, Payload, TableName, Transaction};
use tidings_patterns::bus::{Event, EventBus, Subscriber};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Item {
    product_id: String,
    name: String,
    price: f64,
    quantity: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderCreatedEvent {
    order_id: String,
    user_id: String,
    total: f64,
    items: Vec<Item>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PaymentProcessedEvent {
    payment_id: String,
    order_id: String,
    amount: f64,
    status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderShippedEvent {
    order_id: String,
    tracking_number: String,
    carrier: String,
}

// Every event of an order carries its id as ordering key: a service sees an
// order's events in the order they were published.
impl Event for OrderCreatedEvent {
    const TYPE: &'static str = "OrderCreatedEvent";
    fn ordering_key(&self) -> Option<String> {
        Some(self.order_id.clone())
    }
}

impl Event for PaymentProcessedEvent {
    const TYPE: &'static str = "PaymentProcessedEvent";
    fn ordering_key(&self) -> Option<String> {
        Some(self.order_id.clone())
    }
}

impl Event for OrderShippedEvent {
    const TYPE: &'static str = "OrderShippedEvent";
    fn ordering_key(&self) -> Option<String> {
        Some(self.order_id.clone())
    }
}

/// An order as the order service keeps it (a record in table `orders`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    order_id: String,
    user_id: String,
    total: f64,
    status: String,
    payment_id: Option<String>,
    tracking_number: Option<String>,
    carrier: Option<String>,
}

/// Creates orders and follows them through payment and shipping.
#[derive(Clone)]
struct OrderService {
    broker: Arc<dyn Broker>,
    bus: EventBus,
    orders: TableName,
}

impl OrderService {
    fn new(broker: Arc<dyn Broker>) -> anyhow::Result<Self> {
        Ok(Self {
            bus: EventBus::new(broker.clone()),
            broker,
            orders: TableName::new("orders")?,
        })
    }

    async fn create_order(&self, user_id: &str, items: Vec<Item>) -> anyhow::Result<String> {
        let order_id = common::short_id("order");
        let total = items.iter().map(|i| i.price * f64::from(i.quantity)).sum();
        let order = Order {
            order_id: order_id.clone(),
            user_id: user_id.to_owned(),
            total,
            status: "created".into(),
            payment_id: None,
            tracking_number: None,
            carrier: None,
        };
        self.save(&order).await?;
        println!("[order] created {order_id} for {user_id}: {total:.2}");
        self.bus
            .publish(&OrderCreatedEvent {
                order_id: order_id.clone(),
                user_id: user_id.to_owned(),
                total,
                items,
            })
            .await?;
        Ok(order_id)
    }

    async fn order(&self, id: &str) -> tidings::Result<Order> {
        match self.broker.get_record(&self.orders, id).await? {
            Some(value) => value.json(),
            None => Err(tidings::Error::InvalidArgument(format!("no order {id}"))),
        }
    }

    async fn save(&self, order: &Order) -> tidings::Result<()> {
        let mut tx = Transaction::new();
        tx.put(
            self.orders.clone(),
            order.order_id.clone(),
            Payload::from_value(order)?,
        );
        self.broker.commit(tx).await?;
        Ok(())
    }

    async fn on_paid(&self, e: PaymentProcessedEvent) -> tidings::Result<()> {
        let mut order = self.order(&e.order_id).await?;
        order.status = if e.status == "completed" {
            "paid"
        } else {
            "payment_failed"
        }
        .into();
        order.payment_id = Some(e.payment_id);
        self.save(&order).await
    }

    async fn on_shipped(&self, e: OrderShippedEvent) -> tidings::Result<Order> {
        let mut order = self.order(&e.order_id).await?;
        order.status = "shipped".into();
        order.tracking_number = Some(e.tracking_number);
        order.carrier = Some(e.carrier);
        self.save(&order).await?;
        Ok(order)
    }
}

/// Charges each new order.
fn payment_service(bus: &EventBus) -> Subscriber {
    let mut service = bus.subscriber("payment-service");
    let b = bus.clone();
    service.on(move |e: OrderCreatedEvent| {
        let b = b.clone();
        async move {
            let payment = PaymentProcessedEvent {
                payment_id: common::short_id("pay"),
                order_id: e.order_id,
                amount: e.total,
                status: "completed".into(),
            };
            println!(
                "[payment] charged {:.2} for {}: {}",
                payment.amount, payment.order_id, payment.payment_id
            );
            b.publish(&payment).await.map(|_| ())
        }
    });
    service
}

/// Ships what was paid for.
fn shipping_service(bus: &EventBus) -> Subscriber {
    let mut service = bus.subscriber("shipping-service");
    let b = bus.clone();
    service.on(move |e: PaymentProcessedEvent| {
        let b = b.clone();
        async move {
            if e.status != "completed" {
                return Ok(());
            }
            let shipped = OrderShippedEvent {
                order_id: e.order_id,
                tracking_number: common::short_id("TRK").to_uppercase(),
                carrier: "FastShip".into(),
            };
            println!(
                "[shipping] shipped {} as {}",
                shipped.order_id, shipped.tracking_number
            );
            b.publish(&shipped).await.map(|_| ())
        }
    });
    service
}

/// Tells the customer about every step; each notification goes to `sent`.
fn notification_service(bus: &EventBus, sent: mpsc::UnboundedSender<String>) -> Subscriber {
    let mut service = bus.subscriber("notification-service");
    let tx = sent.clone();
    service.on(move |e: OrderCreatedEvent| {
        let tx = tx.clone();
        async move {
            tx.send(format!(
                "{} we received your order {}",
                e.user_id, e.order_id
            ))
            .ok();
        }
    });
    let tx = sent.clone();
    service.on(move |e: PaymentProcessedEvent| {
        let tx = tx.clone();
        async move {
            tx.send(format!(
                "payment {} for {} is {}",
                e.payment_id, e.order_id, e.status
            ))
            .ok();
        }
    });
    service.on(move |e: OrderShippedEvent| {
        let tx = sent.clone();
        async move {
            tx.send(format!(
                "{} is on its way with {}: {}",
                e.order_id, e.carrier, e.tracking_number
            ))
            .ok();
        }
    });
    service
}

/// Follows orders through payment and shipping; shipped orders go to `shipped`.
fn order_service(
    bus: &EventBus,
    orders: &OrderService,
    shipped: mpsc::UnboundedSender<Order>,
) -> Subscriber {
    let mut service = bus.subscriber("order-service");
    let o = orders.clone();
    service.on(move |e: PaymentProcessedEvent| {
        let o = o.clone();
        async move { o.on_paid(e).await }
    });
    let o = orders.clone();
    service.on(move |e: OrderShippedEvent| {
        let (o, tx) = (o.clone(), shipped.clone());
        async move {
            let order = o.on_shipped(e).await?;
            tx.send(order).ok();
            Ok::<(), tidings::Error>(())
        }
    });
    service
}

const ORDERS: usize = 3;

/// `--service NAME`: one service alone, as its own process, until its
/// standard input closes (the notification service: until it has sent what
/// three orders make).
async fn run_one_service(bus: &EventBus, name: &str) -> anyhow::Result<()> {
    let (sent_tx, mut sent) = mpsc::unbounded_channel::<String>();
    let service = match name {
        "payment" => payment_service(bus),
        "shipping" => shipping_service(bus),
        "notification" => notification_service(bus, sent_tx),
        other => anyhow::bail!("no service {other:?} (payment, shipping, notification)"),
    }
    .run()
    .await?;
    if name == "notification" {
        for _ in 0..ORDERS * 3 {
            if let Some(note) = sent.recv().await {
                println!("[notification] {note}");
            }
        }
    } else {
        // The parent closes our standard input to stop us.
        tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
            .await??;
    }
    service.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let setup = common::broker("ecommerce").await?;
    let bus = EventBus::new(setup.broker.clone());
    if let Some(name) = flag("--service") {
        return run_one_service(&bus, name).await;
    }
    let separate = args.iter().any(|a| a == "--processes");
    if separate && setup.single_process() {
        anyhow::bail!(
            "--processes needs a broker other processes can reach: add --http URL (a running tidings serve), --redis URL or --postgres URL"
        );
    }
    println!("E-commerce example on {}\n", setup.on);
    let orders = OrderService::new(setup.broker.clone())?;
    let (shipped_tx, mut shipped) = mpsc::unbounded_channel::<Order>();
    let (notified_tx, mut notified) = mpsc::unbounded_channel::<String>();

    let mut services = vec![order_service(&bus, &orders, shipped_tx).run().await?];
    let mut children = Vec::new();
    if separate {
        // The other services in processes of their own. Their subscriptions
        // are made first: durable, they collect events even before their
        // process is up.
        bus.subscribe("payment-service", &["OrderCreatedEvent"])
            .await?;
        bus.subscribe("shipping-service", &["PaymentProcessedEvent"])
            .await?;
        bus.subscribe(
            "notification-service",
            &[
                "OrderCreatedEvent",
                "PaymentProcessedEvent",
                "OrderShippedEvent",
            ],
        )
        .await?;
        for name in ["payment", "shipping", "notification"] {
            let child = std::process::Command::new(std::env::current_exe()?)
                .args(setup.broker_args())
                .args(["--service", name])
                .stdin(std::process::Stdio::piped())
                .spawn()?;
            println!("[main] {name} service runs as process {}", child.id());
            children.push(child);
        }
    } else {
        services.push(payment_service(&bus).run().await?);
        services.push(shipping_service(&bus).run().await?);
        services.push(notification_service(&bus, notified_tx).run().await?);
    }

    let mut order_ids = Vec::new();
    for i in 0..ORDERS as u32 {
        let items = vec![
            Item {
                product_id: common::short_id("prod"),
                name: format!("Product {}", i + 1),
                price: 19.99 + f64::from(i) * 10.0,
                quantity: i + 1,
            },
            Item {
                product_id: common::short_id("prod"),
                name: format!("Accessory {}", i + 1),
                price: 5.99,
                quantity: 1,
            },
        ];
        order_ids.push(
            orders
                .create_order(&common::short_id("user"), items)
                .await?,
        );
    }

    // Done when every order is shipped and every notification sent.
    println!("\nWaiting for all events to be processed...");
    for _ in 0..order_ids.len() {
        shipped.recv().await;
    }
    if separate {
        // The notification process ends once it has sent them all; the
        // others when their standard input closes.
        let mut notifier = children.pop().context("the notification process")?;
        notifier.wait()?;
        for mut child in children {
            drop(child.stdin.take());
            child.wait()?;
        }
    } else {
        for _ in 0..order_ids.len() * 3 {
            if let Some(note) = notified.recv().await {
                println!("[notification] {note}");
            }
        }
    }
    // Stopped side by side: each lets its handlers finish first.
    let stopping: Vec<_> = services
        .into_iter()
        .map(|s| tokio::spawn(s.stop()))
        .collect();
    for s in stopping {
        s.await?;
    }

    println!("\nFinal order states:");
    for id in &order_ids {
        let order = orders.order(id).await?;
        println!("Order {}: {}", order.order_id, order.status);
        if let (Some(tracking), Some(carrier)) = (&order.tracking_number, &order.carrier) {
            println!("  Tracking: {tracking} ({carrier})");
        }
        if let Some(payment) = &order.payment_id {
            println!("  Payment: {payment}");
        }
    }

    // Leave nothing behind.
    let mut tx = Transaction::new();
    for id in &order_ids {
        tx.delete(orders.orders.clone(), id.clone());
    }
    setup.broker.commit(tx).await?;
    for name in [
        "order-service",
        "payment-service",
        "shipping-service",
        "notification-service",
    ] {
        bus.unsubscribe(name).await?;
    }
    setup.clean_up().await?;
    println!("\nEvent-driven architecture example completed");
    Ok(())
}
