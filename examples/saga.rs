//! An order-fulfilment saga (the seeds' `OrderFulfillmentSaga`): create the
//! order, reserve inventory, take the payment, confirm. Two orders run; the
//! second one's card is declined, so its inventory reservation is released
//! and the order cancelled by compensation, in reverse order.
//!
//! Saga state is written to the broker after every step: an orchestrator
//! that crashes is replaced by one that calls `resume()` and carries each
//! unfinished saga on. Steps are idempotent (a reservation is recorded with
//! the stock change, in one transaction), since a step interrupted by a
//! crash runs again.
//!
//!     cargo run --example saga                                   # embedded engine
//!     cargo run --example saga -- --redis redis://127.0.0.1:6379  # Redis
//!     cargo run --example saga -- --postgres postgres://postgres@127.0.0.1/postgres  # PostgreSQL

mod common;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidings::{Broker, Error, Payload, TableName, Transaction};
use tidings_patterns::saga::{Saga, SagaOrchestrator};

/// The saga's context: what the steps have learned so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Fulfilment {
    order_id: String,
    product: String,
    quantity: u32,
    card: String,
    amount: f64,
    payment_id: Option<String>,
}

/// The shop's state, as records: stock per product, reservations and
/// orders by order id.
#[derive(Clone)]
struct Shop {
    broker: Arc<dyn Broker>,
    stock: TableName,
    reservations: TableName,
    orders: TableName,
}

impl Shop {
    fn new(broker: Arc<dyn Broker>) -> tidings::Result<Self> {
        Ok(Self {
            broker,
            stock: TableName::new("stock")?,
            reservations: TableName::new("reservations")?,
            orders: TableName::new("orders")?,
        })
    }

    async fn stock_of(&self, product: &str) -> tidings::Result<u32> {
        Ok(match self.broker.get_record(&self.stock, product).await? {
            Some(v) => v.json()?,
            None => 0,
        })
    }

    async fn set_order(&self, id: &str, status: &str) -> tidings::Result<()> {
        let mut tx = Transaction::new();
        tx.put(self.orders.clone(), id, Payload::from_value(&status)?);
        self.broker.commit(tx).await.map(|_| ())
    }

    async fn order_status(&self, id: &str) -> tidings::Result<String> {
        match self.broker.get_record(&self.orders, id).await? {
            Some(v) => v.json(),
            None => Ok("unknown".into()),
        }
    }

    /// Takes stock and records the reservation in one transaction; a second
    /// run for the same order finds the reservation and changes nothing.
    async fn reserve(&self, c: &Fulfilment) -> Result<(), String> {
        let have = self.stock_of(&c.product).await.map_err(|e| e.to_string())?;
        if have < c.quantity {
            return Err(format!("only {have} of {} left", c.product));
        }
        let mut tx = Transaction::new();
        tx.insert(
            self.reservations.clone(),
            c.order_id.clone(),
            payload(&c.quantity)?,
        )
        .put(
            self.stock.clone(),
            c.product.clone(),
            payload(&(have - c.quantity))?,
        );
        match self.broker.commit(tx).await {
            Ok(_) | Err(Error::RecordExists { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Gives reserved stock back, once.
    async fn release(&self, c: &Fulfilment) -> Result<(), String> {
        let reserved = self
            .broker
            .get_record(&self.reservations, &c.order_id)
            .await
            .map_err(|e| e.to_string())?;
        let Some(reserved) = reserved else {
            return Ok(());
        };
        let quantity: u32 = reserved.json().map_err(|e| e.to_string())?;
        let have = self.stock_of(&c.product).await.map_err(|e| e.to_string())?;
        let mut tx = Transaction::new();
        tx.delete(self.reservations.clone(), c.order_id.clone())
            .put(
                self.stock.clone(),
                c.product.clone(),
                payload(&(have + quantity))?,
            );
        self.broker
            .commit(tx)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn payload<T: Serialize>(value: &T) -> Result<Payload, String> {
    Payload::from_value(value).map_err(|e| e.to_string())
}

fn fulfilment(shop: &Shop) -> Saga<Fulfilment> {
    let (s1, s2, s3, s4, s5, s6) = (
        shop.clone(),
        shop.clone(),
        shop.clone(),
        shop.clone(),
        shop.clone(),
        shop.clone(),
    );
    Saga::new("order-fulfilment")
        .step(
            "create_order",
            move |c: Fulfilment| {
                let s = s1.clone();
                async move {
                    println!("  create_order {}", c.order_id);
                    s.set_order(&c.order_id, "pending").await.map(|()| c)
                }
            },
            move |c: Fulfilment| {
                let s = s2.clone();
                async move {
                    println!("  compensate: cancel_order {}", c.order_id);
                    s.set_order(&c.order_id, "cancelled").await
                }
            },
        )
        .step(
            "reserve_inventory",
            move |c: Fulfilment| {
                let s = s3.clone();
                async move {
                    println!("  reserve_inventory {} x {}", c.quantity, c.product);
                    s.reserve(&c).await.map(|()| c)
                }
            },
            move |c: Fulfilment| {
                let s = s4.clone();
                async move {
                    println!(
                        "  compensate: release_inventory {} x {}",
                        c.quantity, c.product
                    );
                    s.release(&c).await
                }
            },
        )
        .step(
            "process_payment",
            |mut c: Fulfilment| async move {
                println!("  process_payment {:.2} on card {}", c.amount, c.card);
                if c.card.ends_with("0002") {
                    return Err("card declined".to_owned());
                }
                c.payment_id = Some(format!("pay-{}", c.order_id));
                Ok(c)
            },
            |c: Fulfilment| async move {
                println!("  compensate: refund {:?}", c.payment_id);
                Ok::<_, String>(())
            },
        )
        .step(
            "confirm_order",
            move |c: Fulfilment| {
                let s = s5.clone();
                async move {
                    println!("  confirm_order {}", c.order_id);
                    s.set_order(&c.order_id, "confirmed").await.map(|()| c)
                }
            },
            move |c: Fulfilment| {
                let s = s6.clone();
                async move { s.set_order(&c.order_id, "pending").await }
            },
        )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let setup = common::broker("saga").await?;
    println!("Saga example on {}\n", setup.on);
    let shop = Shop::new(setup.broker.clone())?;
    let mut tx = Transaction::new();
    tx.put(shop.stock.clone(), "widget", Payload::from_value(&10u32)?);
    setup.broker.commit(tx).await?;
    let orchestrator = SagaOrchestrator::new(setup.broker.clone(), fulfilment(&shop))?;
    // An orchestrator starting up first finishes what a crashed one left.
    orchestrator.resume().await?;

    println!("widgets in stock: {}", shop.stock_of("widget").await?);
    let orders = [("order-1", "4111-0001", 3u32), ("order-2", "4111-0002", 4)];
    for (id, card, quantity) in orders {
        println!("\nsaga {id}:");
        let end = orchestrator
            .run(
                id,
                Fulfilment {
                    order_id: id.into(),
                    product: "widget".into(),
                    quantity,
                    card: card.into(),
                    amount: f64::from(quantity) * 12.5,
                    payment_id: None,
                },
            )
            .await?;
        println!("  => {:?}", end.status);
        if let (Some(step), Some(error)) = (&end.failed_step, &end.error) {
            println!(
                "     failed at {step}: {error}; compensated {:?}",
                end.compensated
            );
        }
        println!("     widgets in stock: {}", shop.stock_of("widget").await?);
    }

    println!("\nFinal state:");
    for (id, _, _) in orders {
        let saga = orchestrator.status(id).await?;
        let status = saga.map(|s| format!("{:?}", s.status)).unwrap_or_default();
        println!(
            "  {id}: saga {status}, order {}",
            shop.order_status(id).await?
        );
    }
    println!(
        "  widgets in stock: {} (order-1 took 3; order-2's 4 were released)",
        shop.stock_of("widget").await?
    );

    // Leave nothing behind.
    let mut tx = Transaction::new();
    tx.delete(shop.stock.clone(), "widget");
    for (id, _, _) in orders {
        tx.delete(shop.orders.clone(), id)
            .delete(shop.reservations.clone(), id)
            .delete(TableName::new("saga.order-fulfilment")?, id);
    }
    setup.broker.commit(tx).await?;
    setup.clean_up().await?;
    println!("\nSaga example completed");
    Ok(())
}
