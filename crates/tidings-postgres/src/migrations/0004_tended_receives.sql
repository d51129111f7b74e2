-- Receives that tend their group only now and then.
--
-- Version 3's receive ran eight statements for every call: the queue's
-- and the group's lookups, a look for expired messages, bringing back
-- deliveries whose visibility timeout passed (stepping over every taken
-- delivery's index entry since the last vacuum), and the consumer's
-- last-seen update, before taking anything. The caller now says when to
-- tend (`tend`): a process tends each consumer's group at most every so
-- often, and always before it waits on an empty queue, so what comes due
-- is brought back within that interval. The lookups are one statement.
-- The four-argument receive stays (it always tends), for processes of
-- the previous version still running during an upgrade. A delivery given
-- back without a delay is ready at once.

CREATE FUNCTION {s}.receive(q bigint, group_name text, consumer_name text, max_messages integer,
                            tend boolean)
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
    SELECT x.visibility_ms, x.max_deliveries, g.id INTO visibility, most, gid
    FROM {s}.queues AS x LEFT JOIN {s}.groups AS g ON g.queue_id = x.id AND g.name = group_name
    WHERE x.id = q;
    IF NOT FOUND THEN
        PERFORM {s}.queue_not_found();
    END IF;
    IF gid IS NULL THEN
        gid := {s}.group_id(q, group_name, now);
        tend := true;
    END IF;
    IF tend THEN
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
        INSERT INTO {s}.consumers AS c (group_id, name, last_seen)
        VALUES (gid, consumer_name, now)
        ON CONFLICT (group_id, name) DO UPDATE SET last_seen = excluded.last_seen
        WHERE c.last_seen < excluded.last_seen - 1000;
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

CREATE OR REPLACE FUNCTION {s}.receive(q bigint, group_name text, consumer_name text,
                                       max_messages integer)
RETURNS TABLE (r_seq bigint, r_count integer, r_payload text, r_headers text,
               r_dedup_id text, r_enqueued_at bigint)
LANGUAGE sql AS $$
    SELECT * FROM {s}.receive(q, group_name, consumer_name, max_messages, true)
$$;

-- A delivery given back without a delay is ready at once (in its place
-- in the line), not left for the next tending; unless it has had all its
-- deliveries: the next tending buries it.
CREATE OR REPLACE FUNCTION {s}.nack(
    q bigint, group_name text, seqs bigint[], delay_ms bigint, reason text
) RETURNS bigint[] LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    now bigint := {s}.now_ms();
    gid bigint;
    most integer;
    given bigint[];
BEGIN
    gid := {s}.group_of(q, group_name);
    IF gid IS NULL THEN
        RETURN '{}';
    END IF;
    PERFORM {s}.share_queue(q);
    IF reason IS NOT NULL THEN
        RETURN {s}.bury(q, gid, seqs, reason, true, now);
    END IF;
    SELECT max_deliveries INTO most FROM {s}.queues WHERE id = q;
    WITH back AS (
        UPDATE {s}.deliveries AS d
        SET consumer = NULL, ready = delay_ms <= 0 AND d.delivery_count < most,
            visible_at = now + greatest(delay_ms, 0)
        WHERE d.seq = ANY(seqs) AND d.group_id = gid AND d.consumer IS NOT NULL
        RETURNING d.seq
    )
    SELECT array_agg(back.seq ORDER BY back.seq) INTO given FROM back;
    RETURN coalesce(given, '{}');
END $$;
