//! The statements the broker sends, written once per schema.

/// Every statement, with the schema filled in.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) queue_by_name: String,
    pub(crate) create_queue: String,
    pub(crate) list_queues: String,
    pub(crate) queue_ids: String,
    pub(crate) send: String,
    pub(crate) receive: String,
    pub(crate) next_due: String,
    pub(crate) ack: String,
    pub(crate) nack: String,
    pub(crate) tidy: String,
    pub(crate) forget_dedup: String,
    pub(crate) queue_counts: String,
    pub(crate) group_counts: String,
    pub(crate) consumer_counts: String,
    pub(crate) drop_queue: String,
    pub(crate) purge: String,
    pub(crate) pending: String,
    pub(crate) forget_consumer: String,
    pub(crate) delete_group: String,
    pub(crate) peek: String,
    pub(crate) letters: String,
    pub(crate) letter: String,
    pub(crate) requeue: String,
    pub(crate) purge_letters: String,
    pub(crate) usage: String,
    pub(crate) get_record: String,
    pub(crate) get_records: String,
    pub(crate) put_record: String,
    pub(crate) put_records: String,
    pub(crate) insert_record: String,
    pub(crate) delete_record: String,
    pub(crate) delete_records: String,
    pub(crate) add_many: String,
    pub(crate) expect: String,
    pub(crate) swap_records: String,
    pub(crate) fold_counters: String,
    /// Record scans by (lower bound, upper bound, reverse).
    scans: [String; 8],
}

impl Statements {
    /// The statements for the schema `s` (a quoted identifier).
    pub(crate) fn new(s: &str) -> Self {
        // A record's value as reads show it: a counter's function only for
        // counters (a SQL function is planned again at every statement).
        let value = format!(
            "CASE WHEN r.gen IS NULL THEN r.value \
             ELSE {s}.record_value(r.tbl, r.key, r.value, r.gen) END"
        );
        let scans = std::array::from_fn(|i| {
            let (lower, upper, reverse) = (i & 1 != 0, i & 2 != 0, i & 4 != 0);
            format!(
                "SELECT r.key, {value} FROM {s}.records AS r \
                 WHERE r.tbl = $1{}{} ORDER BY r.key{} LIMIT $4",
                if lower {
                    " AND r.key >= $2"
                } else {
                    " AND $2::bytea IS NULL"
                },
                if upper {
                    " AND r.key < $3"
                } else {
                    " AND $3::bytea IS NULL"
                },
                if reverse { " DESC" } else { "" },
            )
        });
        Self {
            queue_by_name: format!("SELECT id, config FROM {s}.queues WHERE name = $1"),
            create_queue: format!(
                "INSERT INTO {s}.queues (name, config, visibility_ms, max_deliveries, \
                 default_ttl_ms, dead_letter_expired, dedup_window_ms, retain_max_len, \
                 retain_max_age_ms, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, {s}.now_ms()) \
                 ON CONFLICT (name) DO NOTHING RETURNING id"
            ),
            list_queues: format!("SELECT name FROM {s}.queues ORDER BY name"),
            queue_ids: format!("SELECT id FROM {s}.queues ORDER BY id"),
            send: format!(
                "SELECT sent_seq, sent_duplicate FROM {s}.send($1, $2, $3, $4, $5, $6, $7)"
            ),
            receive: format!("SELECT * FROM {s}.receive($1, $2, $3, $4, $5)"),
            // Milliseconds until the group has something due: 0 when
            // something is ready now (taken by another receive), null when
            // it owes nothing. A statement, not a function, so that it is
            // planned once per connection.
            next_due: format!(
                "WITH g AS (SELECT id FROM {s}.groups WHERE queue_id = $1 AND name = $2) \
                 SELECT CASE WHEN EXISTS \
                     (SELECT 1 FROM {s}.deliveries AS d, g WHERE d.group_id = g.id AND d.ready) \
                 THEN 0 ELSE (SELECT min(d.visible_at) FROM {s}.deliveries AS d, g \
                     WHERE d.group_id = g.id AND NOT d.ready) - {s}.now_ms() END"
            ),
            ack: format!("SELECT {s}.ack($1, $2, $3, $4)"),
            nack: format!("SELECT {s}.nack($1, $2, $3, $4, $5)"),
            tidy: format!("SELECT {s}.tidy($1, $2)"),
            forget_dedup: format!(
                "WITH due AS (SELECT queue_id, dedup_id FROM {s}.dedup \
                 WHERE expires_at <= {s}.now_ms() LIMIT $1 FOR UPDATE SKIP LOCKED) \
                 DELETE FROM {s}.dedup AS x USING due \
                 WHERE x.queue_id = due.queue_id AND x.dedup_id = due.dedup_id"
            ),
            queue_counts: format!(
                "SELECT q.config, q.created_at, q.expired_total, q.dead_lettered_total, \
                 (SELECT count(*) FROM {s}.messages WHERE queue_id = q.id), \
                 (SELECT count(*) FROM {s}.messages WHERE queue_id = q.id AND acked_at IS NOT NULL), \
                 (SELECT min(enqueued_at) FROM {s}.messages WHERE queue_id = q.id), \
                 (SELECT count(*) FROM {s}.dead_letters WHERE queue_id = q.id), \
                 {s}.now_ms() \
                 FROM {s}.queues AS q WHERE q.id = $1"
            ),
            group_counts: format!(
                "SELECT g.id, g.name, \
                 count(d.seq) FILTER (WHERE d.consumer IS NULL AND (d.ready OR d.visible_at <= $2)), \
                 count(d.seq) FILTER (WHERE d.consumer IS NULL AND NOT d.ready AND d.visible_at > $2), \
                 count(d.seq) FILTER (WHERE d.consumer IS NOT NULL) \
                 FROM {s}.groups AS g LEFT JOIN {s}.deliveries AS d ON d.group_id = g.id \
                 WHERE g.queue_id = $1 GROUP BY g.id, g.name ORDER BY g.name"
            ),
            consumer_counts: format!(
                "SELECT c.group_id, c.name, c.last_seen, \
                 (SELECT count(*) FROM {s}.deliveries AS d \
                  WHERE d.group_id = c.group_id AND d.consumer = c.name) \
                 FROM {s}.consumers AS c JOIN {s}.groups AS g ON g.id = c.group_id \
                 WHERE g.queue_id = $1 ORDER BY c.name"
            ),
            drop_queue: format!("SELECT {s}.drop_queue($1)"),
            purge: format!("SELECT {s}.purge($1)"),
            pending: format!(
                "SELECT d.seq, d.consumer, d.delivery_count, \
                 greatest(d.visible_at - {s}.now_ms(), 0) \
                 FROM {s}.deliveries AS d JOIN {s}.groups AS g ON g.id = d.group_id \
                 WHERE g.queue_id = $1 AND g.name = $2 AND d.consumer IS NOT NULL \
                 ORDER BY d.seq LIMIT $3"
            ),
            forget_consumer: format!(
                "DELETE FROM {s}.consumers AS c USING {s}.groups AS g \
                 WHERE g.id = c.group_id AND g.queue_id = $1 AND g.name = $2 AND c.name = $3 \
                 AND NOT EXISTS (SELECT 1 FROM {s}.deliveries AS d \
                                 WHERE d.group_id = g.id AND d.consumer = $3)"
            ),
            delete_group: format!("SELECT {s}.delete_group($1, $2)"),
            peek: format!(
                "SELECT seq, 0::int4, payload, headers, dedup_id, enqueued_at FROM {s}.messages \
                 WHERE queue_id = $1 AND seq > $2 \
                 AND (expires_at IS NULL OR expires_at > {s}.now_ms()) \
                 ORDER BY seq LIMIT $3"
            ),
            letters: format!(
                "SELECT id, original_seq, group_name, reason, attempts, enqueued_at, \
                 dead_lettered_at, payload, headers, dedup_id FROM {s}.dead_letters \
                 WHERE queue_id = $1 AND id > $2 ORDER BY id LIMIT $3"
            ),
            letter: format!(
                "SELECT id, original_seq, group_name, reason, attempts, enqueued_at, \
                 dead_lettered_at, payload, headers, dedup_id FROM {s}.dead_letters \
                 WHERE queue_id = $1 AND id = $2"
            ),
            requeue: format!("SELECT {s}.requeue($1, $2)"),
            purge_letters: format!(
                "DELETE FROM {s}.dead_letters WHERE queue_id = $1 \
                 AND ($2::bigint[] IS NULL OR id = ANY($2))"
            ),
            usage: "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint \
                    FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace \
                    WHERE n.nspname = $1 AND c.relkind IN ('r', 'S')"
                .to_owned(),
            get_record: format!(
                "SELECT {value} FROM {s}.records AS r WHERE r.tbl = $1 AND r.key = $2"
            ),
            // One row per key asked, in order (null where none).
            get_records: format!("SELECT value FROM {s}.get_records($1, $2)"),
            // Writing a counter over starts a new generation of its deltas.
            put_record: format!(
                "INSERT INTO {s}.records (tbl, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value, \
                 gen = CASE WHEN {s}.records.gen IS NULL THEN NULL \
                 ELSE nextval('{s}.counter_gens') END"
            ),
            put_records: format!(
                "INSERT INTO {s}.records (tbl, key, value) \
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[]) \
                 ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value, \
                 gen = CASE WHEN {s}.records.gen IS NULL THEN NULL \
                 ELSE nextval('{s}.counter_gens') END"
            ),
            insert_record: format!(
                "INSERT INTO {s}.records (tbl, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (tbl, key) DO NOTHING"
            ),
            delete_record: format!("DELETE FROM {s}.records WHERE tbl = $1 AND key = $2"),
            delete_records: format!("SELECT {s}.delete_records($1, $2)"),
            add_many: format!("SELECT {s}.add_many($1, $2, $3)"),
            expect: format!("SELECT {s}.expect($1, $2, $3)"),
            swap_records: format!("SELECT {s}.swap_records($1, $2, $3, $4)"),
            fold_counters: format!("SELECT {s}.fold_counters($1)"),
            scans,
        }
    }

    /// The scan with these bounds.
    pub(crate) fn scan(&self, lower: bool, upper: bool, reverse: bool) -> &str {
        &self.scans[usize::from(lower) | usize::from(upper) << 1 | usize::from(reverse) << 2]
    }
}
