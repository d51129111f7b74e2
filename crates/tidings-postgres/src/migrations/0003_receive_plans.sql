-- Receive plans that do not depend on the tables' statistics.
--
-- PL/pgSQL keeps a generic plan of each statement, made from the
-- statistics of the moment: a queue's tables measured while nearly empty
-- (a new schema) gave a plan that read every stored message of the queue
-- to find the few taken, for every receive, so receives slowed down as
-- backlogs grew (auto_explain during a drain: 14,990 rows read to return
-- one, 108 ms). Each taken message is now looked up by its key.

CREATE OR REPLACE FUNCTION {s}.receive(q bigint, group_name text, consumer_name text, max_messages integer)
RETURNS TABLE (r_seq bigint, r_count integer, r_payload text, r_headers text,
               r_dedup_id text, r_enqueued_at bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    now bigint := {s}.now_ms();
    visibility bigint;
    most integer;
    gid bigint;
    spent bigint[];
BEGIN
    -- Losing a receive in a crash only delivers its messages again.
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT visibility_ms, max_deliveries INTO visibility, most FROM {s}.queues WHERE id = q;
    IF NOT FOUND THEN
        PERFORM {s}.queue_not_found();
    END IF;
    SELECT g.id INTO gid FROM {s}.groups AS g WHERE g.queue_id = q AND g.name = group_name;
    IF NOT FOUND THEN
        gid := {s}.group_id(q, group_name, now);
    END IF;
    IF EXISTS (SELECT 1 FROM {s}.messages AS m
               WHERE m.queue_id = q AND m.expires_at <= now AND m.acked_at IS NULL) THEN
        PERFORM {s}.expire(q, 100, now);
    END IF;
    WITH due AS (
        SELECT w.seq, w.delivery_count FROM {s}.deliveries AS w
        WHERE w.group_id = gid AND NOT w.ready AND w.visible_at <= now
        LIMIT 1000 FOR UPDATE SKIP LOCKED
    ), back AS (
        UPDATE {s}.deliveries AS d SET ready = true
        FROM due WHERE d.seq = due.seq AND d.group_id = gid AND due.delivery_count < most
    )
    SELECT array_agg(due.seq ORDER BY due.seq) FILTER (WHERE due.delivery_count >= most)
    INTO spent FROM due;
    IF spent IS NOT NULL THEN
        PERFORM {s}.bury(q, gid, spent,
            format('not acknowledged after %s deliveries (visibility timeout %s ms)',
                   most, visibility),
            false, now);
    END IF;
    UPDATE {s}.consumers SET last_seen = now
    WHERE group_id = gid AND name = consumer_name AND last_seen < now - 1000;
    IF NOT FOUND THEN
        INSERT INTO {s}.consumers (group_id, name, last_seen) VALUES (gid, consumer_name, now)
        ON CONFLICT (group_id, name) DO NOTHING;
    END IF;
    RETURN QUERY
    WITH due AS (
        SELECT d.seq FROM {s}.deliveries AS d
        WHERE d.group_id = gid AND d.ready
          AND (d.expires_at IS NULL OR d.expires_at > now)
        ORDER BY d.seq
        LIMIT max_messages
        FOR UPDATE SKIP LOCKED
    ), taken AS (
        UPDATE {s}.deliveries AS d
        SET ready = false,
            visible_at = now + visibility,
            delivery_count = d.delivery_count + 1,
            consumer = consumer_name
        FROM due WHERE d.seq = due.seq AND d.group_id = gid
        RETURNING d.seq, d.delivery_count
    )
    SELECT t.seq, t.delivery_count, m.payload, m.headers, m.dedup_id, m.enqueued_at
    FROM taken AS t, LATERAL (
        SELECT x.payload, x.headers, x.dedup_id, x.enqueued_at FROM {s}.messages AS x
        WHERE x.queue_id = q AND x.seq = t.seq
        LIMIT 1 -- (not merged into the outer query: looked up per message)
    ) AS m
    ORDER BY t.seq;
END $$;


