//! The schema's versions, and bringing a database up to the newest one.
//!
//! Each migration runs in a transaction of its own and records its version
//! in `<schema>.tidings_migrations`; a session advisory lock makes
//! processes that open the same schema at once take turns, so each
//! migration is applied exactly once. A schema written by a newer Tidings
//! (a version this build does not know) is refused, never changed.

use tokio_postgres::Client;

use crate::error::{Failure, SchemaError};

/// One step of the schema.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, oldest first. Never edit one that has shipped: add the
/// next.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "queues and records",
        sql: include_str!("migrations/0001_queues_and_records.sql"),
    },
    Migration {
        version: 2,
        name: "counter deltas",
        sql: include_str!("migrations/0002_counter_deltas.sql"),
    },
    Migration {
        version: 3,
        name: "receive plans",
        sql: include_str!("migrations/0003_receive_plans.sql"),
    },
    Migration {
        version: 4,
        name: "tended receives",
        sql: include_str!("migrations/0004_tended_receives.sql"),
    },
    Migration {
        version: 5,
        name: "generic plans",
        sql: include_str!("migrations/0005_generic_plans.sql"),
    },
    Migration {
        version: 6,
        name: "groups owe at creation",
        sql: include_str!("migrations/0006_groups_owe_at_creation.sql"),
    },
    Migration {
        version: 7,
        name: "groups let go",
        sql: include_str!("migrations/0007_groups_let_go.sql"),
    },
    Migration {
        version: 8,
        name: "shared settlements",
        sql: include_str!("migrations/0008_shared_settlements.sql"),
    },
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 8;

/// First keys of the advisory locks a schema takes (the second is derived
/// from the schema's name, or the queue or record locked).
pub(crate) const MIGRATION_LOCK: i32 = 0x7469_6401;

/// The schema-specific texts a migration's SQL is written with.
pub(crate) struct Placeholders<'a> {
    /// The schema, quoted.
    pub(crate) schema: &'a str,
    /// First key of the queue locks.
    pub(crate) queue_lock: i32,
    /// First key of the record locks.
    pub(crate) record_lock: i32,
}

impl Placeholders<'_> {
    fn fill(&self, sql: &str) -> String {
        sql.replace("{s}", self.schema)
            .replace("{queue_lock}", &self.queue_lock.to_string())
            .replace("{record_lock}", &self.record_lock.to_string())
    }
}

/// What [`run`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The version the schema was at (0: it did not exist).
    pub from: i32,
    /// The version it is at now.
    pub to: i32,
}

/// Brings the schema to `target` (with `apply`), or only checks that it is
/// there (without). Takes the schema's migration lock for the duration.
/// Only tests aim below [`SCHEMA_VERSION`] (to see an upgrade).
pub(crate) async fn run(
    client: &Client,
    schema_name: &str,
    places: &Placeholders<'_>,
    apply: bool,
    target: i32,
) -> Result<Migrated, Failure> {
    let lock_key = crate::error::hash32(schema_name);
    client
        .execute(
            "SELECT pg_advisory_lock($1, $2)",
            &[&MIGRATION_LOCK, &lock_key],
        )
        .await?;
    let result = locked(client, schema_name, places, apply, target).await;
    let unlocked = client
        .execute(
            "SELECT pg_advisory_unlock($1, $2)",
            &[&MIGRATION_LOCK, &lock_key],
        )
        .await;
    let migrated = result?;
    unlocked?;
    Ok(migrated)
}

async fn locked(
    client: &Client,
    schema_name: &str,
    places: &Placeholders<'_>,
    apply: bool,
    target: i32,
) -> Result<Migrated, Failure> {
    let from = current_version(client, schema_name).await?;
    if from > SCHEMA_VERSION {
        return Err(SchemaError::TooNew {
            schema: schema_name.to_owned(),
            found: from,
            known: SCHEMA_VERSION,
        }
        .into());
    }
    if from < target && !apply {
        return Err(SchemaError::Outdated {
            schema: schema_name.to_owned(),
            found: from,
            known: SCHEMA_VERSION,
        }
        .into());
    }
    let schema = places.schema;
    if from == 0 {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {schema}.tidings_migrations (
                     version integer PRIMARY KEY,
                     name text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 );"
            ))
            .await?;
    }
    for migration in MIGRATIONS
        .iter()
        .filter(|m| m.version > from && m.version <= target)
    {
        let sql = places.fill(migration.sql);
        let record = format!(
            "INSERT INTO {schema}.tidings_migrations (version, name) VALUES ({}, '{}');",
            migration.version, migration.name
        );
        let applied = client
            .batch_execute(&format!("BEGIN;\n{sql}\n{record}\nCOMMIT;"))
            .await;
        if let Err(e) = applied {
            // The failed transaction is still open on this connection.
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(SchemaError::Failed {
                version: migration.version,
                detail: crate::error::db_message(&e),
            }
            .into());
        }
        tracing::info!(
            schema = schema_name,
            version = migration.version,
            name = migration.name,
            "applied a schema migration"
        );
    }
    Ok(Migrated {
        from,
        to: from.max(target),
    })
}

/// The schema's version: 0 when it has no migrations table.
async fn current_version(client: &Client, schema_name: &str) -> Result<i32, Failure> {
    let exists = client
        .query_one(
            "SELECT to_regclass(quote_ident($1) || '.tidings_migrations') IS NOT NULL",
            &[&schema_name],
        )
        .await?;
    if !exists.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM \"{schema_name}\".tidings_migrations"),
            &[],
        )
        .await?;
    Ok(row.get(0))
}
