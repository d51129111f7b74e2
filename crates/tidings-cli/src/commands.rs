//! The `queue` and `dlq` commands.

use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use tidings::{
    Broker, ConsumerName, DeadLetterSelection, Durability, ExpiryAction, GroupName, MessageId,
    OutgoingMessage, Payload, QueueConfig, QueueName, ReceiveOptions, Retention,
};

use crate::cli::{DlqCommand, DurabilityArg, OnExpiry, QueueCommand, QueueSettings};
use crate::output::{age, json as print_json, table, time};

fn queue_name(name: &str) -> anyhow::Result<QueueName> {
    Ok(QueueName::new(name)?)
}

fn config(s: QueueSettings) -> QueueConfig {
    QueueConfig {
        visibility_timeout: s.visibility_timeout,
        max_deliveries: s.max_deliveries,
        default_ttl: s.default_ttl,
        on_expiry: match s.on_expiry {
            OnExpiry::Drop => ExpiryAction::Drop,
            OnExpiry::DeadLetter => ExpiryAction::DeadLetter,
        },
        dedup_window: s.dedup_window,
        retention: Retention {
            max_len: s.retain_max_len,
            max_age: s.retain_max_age,
        },
        durability: s.durability.map(|d| match d {
            DurabilityArg::Sync => Durability::Sync,
            DurabilityArg::Buffered => Durability::Buffered,
        }),
    }
}

async fn read_stdin_payloads() -> anyhow::Result<Vec<String>> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut payloads = Vec::new();
    while let Some(line) = lines.next_line().await? {
        if !line.trim().is_empty() {
            payloads.push(line);
        }
    }
    Ok(payloads)
}

pub async fn queue(
    broker: Arc<dyn Broker>,
    json: bool,
    command: QueueCommand,
) -> anyhow::Result<()> {
    match command {
        QueueCommand::Create { name, settings } => {
            let name = queue_name(&name)?;
            let created = broker.create_queue(&name, config(settings)).await?;
            if json {
                print_json(&json!({ "queue": name, "created": created }))?;
            } else if created {
                println!("created queue {name}");
            } else {
                println!("queue {name} already exists with these settings");
            }
        }
        QueueCommand::List => {
            let names = broker.list_queues().await?;
            if json {
                print_json(&names)?;
            } else {
                let mut rows = Vec::new();
                for name in &names {
                    let info = broker.queue_info(name).await?;
                    rows.push(vec![
                        name.to_string(),
                        info.length.to_string(),
                        info.groups.len().to_string(),
                        info.dead_letters.to_string(),
                    ]);
                }
                table(&["QUEUE", "LENGTH", "GROUPS", "DEAD LETTERS"], &rows);
            }
        }
        QueueCommand::Info { name } => {
            let info = broker.queue_info(&queue_name(&name)?).await?;
            if json {
                return print_json(&info);
            }
            show_info(&info);
        }
        QueueCommand::Send {
            name,
            payload,
            headers,
            dedup_id,
            ttl,
            delay,
        } => {
            let name = queue_name(&name)?;
            let texts = match payload.as_deref() {
                None | Some("-") => read_stdin_payloads().await?,
                Some(text) => vec![text.to_owned()],
            };
            if texts.is_empty() {
                bail!("no payload given (pass JSON as an argument or on stdin)");
            }
            let messages = outgoing(texts, &headers, dedup_id, ttl, delay)?;
            let receipts = broker.send_batch(&name, messages).await?;
            if json {
                print_json(&receipts)?;
            } else {
                for r in receipts {
                    let note = if r.duplicate {
                        " (duplicate, not stored again)"
                    } else {
                        ""
                    };
                    println!("{}{note}", r.id);
                }
            }
        }
        QueueCommand::Receive {
            name,
            group,
            consumer,
            max,
            wait,
            ack,
        } => {
            let name = queue_name(&name)?;
            let group = GroupName::new(group)?;
            let consumer = ConsumerName::new(consumer)?;
            let got = broker
                .receive(&name, &group, &consumer, ReceiveOptions::new(max, wait))
                .await?;
            if ack && !got.is_empty() {
                let ids: Vec<MessageId> = got.iter().map(|d| d.id.clone()).collect();
                broker.ack(&name, &group, &ids).await?;
            }
            show_deliveries(json, &got)?;
        }
        QueueCommand::Ack { name, group, ids } => {
            let ids: Vec<MessageId> = ids.into_iter().map(MessageId::from).collect();
            let acked = broker
                .ack(&queue_name(&name)?, &GroupName::new(group)?, &ids)
                .await?;
            if json {
                print_json(&json!({ "acked": acked }))?;
            } else {
                println!("acked {acked} of {}", ids.len());
            }
        }
        QueueCommand::Purge { name } => {
            let purged = broker.purge_queue(&queue_name(&name)?).await?;
            if json {
                print_json(&json!({ "purged": purged }))?;
            } else {
                println!("purged {purged} messages");
            }
        }
        QueueCommand::Delete { name } => {
            let name = queue_name(&name)?;
            broker.delete_queue(&name).await?;
            if json {
                print_json(&json!({ "deleted": name }))?;
            } else {
                println!("deleted queue {name}");
            }
        }
    }
    Ok(())
}

fn selection(ids: Vec<String>, all: bool) -> anyhow::Result<DeadLetterSelection> {
    match (all, ids.is_empty()) {
        (true, _) => Ok(DeadLetterSelection::All),
        (false, false) => Ok(DeadLetterSelection::Ids(
            ids.into_iter().map(MessageId::from).collect(),
        )),
        (false, true) => bail!("name dead-letter ids, or pass --all"),
    }
}

pub async fn dlq(broker: Arc<dyn Broker>, json: bool, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { name, limit, after } => {
            let after = after.map(MessageId::from);
            let letters = broker
                .dead_letters(&queue_name(&name)?, after.as_ref(), limit)
                .await?;
            if json {
                return print_json(&letters);
            }
            let rows: Vec<Vec<String>> = letters
                .iter()
                .map(|d| {
                    vec![
                        d.id.to_string(),
                        d.group.as_ref().map_or("-".into(), ToString::to_string),
                        d.attempts.to_string(),
                        time(d.dead_lettered_at),
                        d.reason.clone(),
                        d.payload.to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "GROUP",
                    "ATTEMPTS",
                    "DEAD-LETTERED",
                    "REASON",
                    "PAYLOAD",
                ],
                &rows,
            );
        }
        DlqCommand::Requeue { name, ids, all } => {
            let n = broker
                .requeue_dead_letters(&queue_name(&name)?, selection(ids, all)?)
                .await?;
            if json {
                print_json(&json!({ "requeued": n }))?;
            } else {
                println!("requeued {n} dead letters");
            }
        }
        DlqCommand::Purge { name, ids, all } => {
            let n = broker
                .purge_dead_letters(&queue_name(&name)?, selection(ids, all)?)
                .await?;
            if json {
                print_json(&json!({ "purged": n }))?;
            } else {
                println!("purged {n} dead letters");
            }
        }
    }
    Ok(())
}

/// A queue's state, for people.
fn show_info(info: &tidings::QueueInfo) {
    println!("queue:          {}", info.name);
    println!("created:        {}", time(info.created_at));
    println!(
        "length:         {} ({} retained after ack)",
        info.length, info.retained
    );
    if let Some(oldest) = info.oldest_message_age {
        println!("oldest message: {} old", age(oldest));
    }
    println!(
        "dead letters:   {} (total dead-lettered {}, expired {})",
        info.dead_letters, info.dead_lettered_total, info.expired_total
    );
    let c = &info.config;
    println!(
        "settings:       visibility timeout {}, max deliveries {}, dedup window {}",
        age(c.visibility_timeout),
        c.max_deliveries,
        age(c.dedup_window)
    );
    let rows: Vec<Vec<String>> = info
        .groups
        .iter()
        .map(|g| {
            vec![
                g.name.to_string(),
                g.ready.to_string(),
                g.delayed.to_string(),
                g.pending.to_string(),
                g.consumers.len().to_string(),
            ]
        })
        .collect();
    println!();
    table(
        &["GROUP", "READY", "DELAYED", "PENDING", "CONSUMERS"],
        &rows,
    );
}

/// The messages of `queue send`: one per payload text, each with the
/// options given.
fn outgoing(
    texts: Vec<String>,
    headers: &[String],
    dedup_id: Option<String>,
    ttl: Option<std::time::Duration>,
    delay: Option<std::time::Duration>,
) -> anyhow::Result<Vec<OutgoingMessage>> {
    if dedup_id.is_some() && texts.len() > 1 {
        bail!(
            "--dedup-id applies to one message; stdin held {}",
            texts.len()
        );
    }
    let mut messages = Vec::with_capacity(texts.len());
    for (line, text) in texts.into_iter().enumerate() {
        let payload = Payload::from_json_str(text)
            .with_context(|| format!("payload {} is not valid JSON", line + 1))?;
        let mut message = OutgoingMessage::new(payload);
        for header in headers {
            let (k, v) = header
                .split_once('=')
                .with_context(|| format!("header {header:?} is not NAME=VALUE"))?;
            message = message.header(k, v);
        }
        message.dedup_id = dedup_id.clone();
        message.ttl = ttl;
        message.delay = delay;
        messages.push(message);
    }
    Ok(messages)
}

/// Deliveries, as JSON or a table.
fn show_deliveries(json: bool, got: &[tidings::Delivery]) -> anyhow::Result<()> {
    if json {
        let out: Vec<_> = got
            .iter()
            .map(|d| {
                json!({
                    "id": d.id, "payload": d.payload, "headers": d.headers,
                    "dedup_id": d.dedup_id, "enqueued_at": d.enqueued_at,
                    "delivery_count": d.delivery_count,
                })
            })
            .collect();
        print_json(&out)?;
    } else {
        let rows: Vec<Vec<String>> = got
            .iter()
            .map(|d| {
                vec![
                    d.id.to_string(),
                    d.delivery_count.to_string(),
                    time(d.enqueued_at),
                    d.payload.to_string(),
                ]
            })
            .collect();
        table(&["ID", "DELIVERIES", "ENQUEUED", "PAYLOAD"], &rows);
    }
    Ok(())
}
