-- Tidings on PostgreSQL, schema version 1: queues, consumer groups, dead
-- letters, dedup ids and records, and the functions that change them.
--
-- `{s}` is the schema (a quoted identifier), `{queue_lock}` and
-- `{record_lock}` the first keys of the advisory locks this schema takes.
-- Times are milliseconds since the Unix epoch, read from the database's
-- clock, so every process sharing the schema agrees on them.

CREATE SEQUENCE {s}.message_seq;

-- A queue and its settings (`config` holds them as the client gave them,
-- the other columns as the functions read them).
CREATE TABLE {s}.queues (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text COLLATE "C" NOT NULL UNIQUE,
    config text NOT NULL,
    visibility_ms bigint NOT NULL,
    max_deliveries integer NOT NULL,
    default_ttl_ms bigint,
    dead_letter_expired boolean NOT NULL,
    dedup_window_ms bigint NOT NULL,
    retain_max_len bigint,
    retain_max_age_ms bigint,
    created_at bigint NOT NULL,
    expired_total bigint NOT NULL DEFAULT 0,
    dead_lettered_total bigint NOT NULL DEFAULT 0
);

-- Every stored message, until each group has acked it (and retention
-- has let it go).
CREATE TABLE {s}.messages (
    queue_id bigint NOT NULL,
    seq bigint NOT NULL DEFAULT nextval('{s}.message_seq'),
    payload text NOT NULL,
    headers text,
    dedup_id text,
    enqueued_at bigint NOT NULL,
    deliver_at bigint NOT NULL,
    expires_at bigint,
    acked_at bigint,
    PRIMARY KEY (queue_id, seq)
);
CREATE INDEX messages_expiring ON {s}.messages (queue_id, expires_at)
    WHERE expires_at IS NOT NULL AND acked_at IS NULL;
CREATE INDEX messages_retained ON {s}.messages (queue_id, seq)
    WHERE acked_at IS NOT NULL;

CREATE TABLE {s}.groups (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_id bigint NOT NULL,
    name text COLLATE "C" NOT NULL,
    created_at bigint NOT NULL,
    UNIQUE (queue_id, name)
);

-- What a group still owes of a message. `ready`: it is handed out next,
-- in seq order. Otherwise it waits for `visible_at`: a delay, a retry's
-- delay, or the visibility timeout of `consumer`, who holds it (and may
-- still ack it until it is handed out again). A receive first marks what
-- has come due as ready, so that messages come back at their place.
CREATE TABLE {s}.deliveries (
    seq bigint NOT NULL,
    group_id bigint NOT NULL,
    ready boolean NOT NULL,
    visible_at bigint NOT NULL,
    delivery_count integer NOT NULL DEFAULT 0,
    consumer text COLLATE "C",
    expires_at bigint,
    PRIMARY KEY (seq, group_id)
);
CREATE INDEX deliveries_ready ON {s}.deliveries (group_id, seq) WHERE ready;
CREATE INDEX deliveries_waiting ON {s}.deliveries (group_id, visible_at) WHERE NOT ready;

CREATE TABLE {s}.consumers (
    group_id bigint NOT NULL,
    name text COLLATE "C" NOT NULL,
    last_seen bigint NOT NULL,
    PRIMARY KEY (group_id, name)
);

CREATE TABLE {s}.dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_id bigint NOT NULL,
    original_seq bigint NOT NULL,
    group_name text COLLATE "C",
    reason text NOT NULL,
    attempts integer NOT NULL,
    enqueued_at bigint NOT NULL,
    dead_lettered_at bigint NOT NULL,
    payload text NOT NULL,
    headers text,
    dedup_id text
);
CREATE INDEX dead_letters_of_queue ON {s}.dead_letters (queue_id, id);

CREATE TABLE {s}.dedup (
    queue_id bigint NOT NULL,
    dedup_id text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    expires_at bigint NOT NULL,
    PRIMARY KEY (queue_id, dedup_id)
);
CREATE INDEX dedup_expiry ON {s}.dedup (expires_at);

-- Records: keys are bytes, so they sort as bytes and may hold any text.
CREATE TABLE {s}.records (
    tbl text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (tbl, key)
);

CREATE FUNCTION {s}.now_ms() RETURNS bigint LANGUAGE sql VOLATILE AS $$
    SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint
$$;

CREATE FUNCTION {s}.queue_not_found() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'queue not found' USING ERRCODE = 'TD001';
END $$;

-- Sends and acks share a queue's lock; creating a group, purging and
-- deleting take it alone, so a new group owes exactly the messages
-- committed before it and every one sent after.
CREATE FUNCTION {s}.share_queue(q bigint) RETURNS void LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock_shared({queue_lock}, (q % 2147483647)::integer)
$$;

CREATE FUNCTION {s}.own_queue(q bigint) RETURNS void LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock({queue_lock}, (q % 2147483647)::integer)
$$;

-- Stores messages; one row per message in order: its seq, and whether its
-- dedup id matched an earlier message (whose seq it returns).
-- `p_dedup_ids` is null when no message has one.
CREATE FUNCTION {s}.send(
    q bigint, p_payloads text[], p_headers text[], p_dedup_ids text[],
    p_ttls bigint[], p_delays bigint[], synchronous boolean
) RETURNS TABLE (sent_seq bigint, sent_duplicate boolean) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    now bigint := {s}.now_ms();
    default_ttl bigint;
    window_ms bigint;
    s bigint;
    due bigint;
    dies bigint;
BEGIN
    IF NOT synchronous THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    PERFORM {s}.share_queue(q);
    SELECT default_ttl_ms, dedup_window_ms INTO default_ttl, window_ms
    FROM {s}.queues WHERE id = q;
    IF NOT FOUND THEN
        PERFORM {s}.queue_not_found();
    END IF;
    IF p_dedup_ids IS NULL AND cardinality(p_payloads) > 1 THEN
        RETURN QUERY
        WITH m AS (
            INSERT INTO {s}.messages AS ins
                (queue_id, payload, headers, enqueued_at, deliver_at, expires_at)
            SELECT q, u.p, u.h, now, now + coalesce(u.d, 0), now + coalesce(u.t, default_ttl)
            FROM unnest(p_payloads, p_headers, p_ttls, p_delays) WITH ORDINALITY AS u(p, h, t, d, o)
            ORDER BY u.o
            RETURNING ins.seq, ins.deliver_at, ins.expires_at
        ), owed AS (
            INSERT INTO {s}.deliveries (seq, group_id, ready, visible_at, expires_at)
            SELECT m.seq, g.id, m.deliver_at <= now, m.deliver_at, m.expires_at
            FROM m CROSS JOIN {s}.groups AS g WHERE g.queue_id = q
        )
        SELECT m.seq, false FROM m ORDER BY m.seq;
        RETURN;
    END IF;
    FOR i IN 1 .. coalesce(array_length(p_payloads, 1), 0) LOOP
        due := now + coalesce(p_delays[i], 0);
        dies := now + coalesce(p_ttls[i], default_ttl);
        IF p_dedup_ids[i] IS NOT NULL THEN
            INSERT INTO {s}.dedup AS x (queue_id, dedup_id, seq, expires_at)
            VALUES (q, p_dedup_ids[i], nextval('{s}.message_seq'), now + window_ms)
            ON CONFLICT (queue_id, dedup_id) DO UPDATE
                SET seq = excluded.seq, expires_at = excluded.expires_at
                WHERE x.expires_at <= now
            RETURNING x.seq INTO s;
            IF NOT FOUND THEN
                SELECT x.seq INTO s FROM {s}.dedup AS x
                WHERE x.queue_id = q AND x.dedup_id = p_dedup_ids[i];
                sent_seq := s;
                sent_duplicate := true;
                RETURN NEXT;
                CONTINUE;
            END IF;
            INSERT INTO {s}.messages
                (queue_id, seq, payload, headers, dedup_id, enqueued_at, deliver_at, expires_at)
            VALUES (q, s, p_payloads[i], p_headers[i], p_dedup_ids[i], now, due, dies);
        ELSE
            INSERT INTO {s}.messages AS ins
                (queue_id, payload, headers, enqueued_at, deliver_at, expires_at)
            VALUES (q, p_payloads[i], p_headers[i], now, due, dies)
            RETURNING ins.seq INTO s;
        END IF;
        INSERT INTO {s}.deliveries (seq, group_id, ready, visible_at, expires_at)
        SELECT s, g.id, due <= now, due, dies FROM {s}.groups AS g WHERE g.queue_id = q;
        sent_seq := s;
        sent_duplicate := false;
        RETURN NEXT;
    END LOOP;
END $$;

-- A message every group has settled leaves, or stays as retained.
CREATE FUNCTION {s}.settle(q bigint, seqs bigint[], now bigint) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    shared_by_groups boolean;
    keeps boolean;
BEGIN
    SELECT (SELECT count(*) > 1 FROM {s}.groups WHERE queue_id = q),
           coalesce(retain_max_len, 0) > 0 OR coalesce(retain_max_age_ms, 0) > 0
    INTO shared_by_groups, keeps
    FROM {s}.queues WHERE id = q;
    -- With several groups, two of them may settle one message at once:
    -- the row lock makes the second see the first's settlement.
    IF shared_by_groups THEN
        PERFORM 1 FROM {s}.messages AS m
        WHERE m.queue_id = q AND m.seq = ANY(seqs) ORDER BY m.seq FOR UPDATE;
    END IF;
    IF NOT keeps THEN
        DELETE FROM {s}.messages AS m
        WHERE m.queue_id = q AND m.seq = ANY(seqs)
          AND NOT EXISTS (SELECT 1 FROM {s}.deliveries AS d WHERE d.seq = m.seq);
    ELSE
        UPDATE {s}.messages AS m SET acked_at = now
        WHERE m.queue_id = q AND m.seq = ANY(seqs) AND m.acked_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM {s}.deliveries AS d WHERE d.seq = m.seq);
        PERFORM {s}.trim_retained(q, now);
    END IF;
END $$;

-- Lets go of retained messages past the queue's retention (never one a
-- group still owes).
CREATE FUNCTION {s}.trim_retained(q bigint, now bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    cfg {s}.queues%ROWTYPE;
    oldest_kept bigint;
    n bigint := 0;
    k bigint;
BEGIN
    SELECT * INTO cfg FROM {s}.queues WHERE id = q;
    IF coalesce(cfg.retain_max_age_ms, 0) > 0 THEN
        DELETE FROM {s}.messages AS m
        WHERE m.queue_id = q AND m.acked_at IS NOT NULL
          AND m.enqueued_at <= now - cfg.retain_max_age_ms
          AND NOT EXISTS (SELECT 1 FROM {s}.deliveries AS d WHERE d.seq = m.seq);
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
    END IF;
    IF cfg.retain_max_len IS NOT NULL THEN
        SELECT m.seq INTO oldest_kept FROM {s}.messages AS m
        WHERE m.queue_id = q AND m.acked_at IS NOT NULL
        ORDER BY m.seq DESC OFFSET greatest(cfg.retain_max_len - 1, 0) LIMIT 1;
        IF FOUND THEN
            DELETE FROM {s}.messages AS m
            WHERE m.queue_id = q AND m.acked_at IS NOT NULL
              AND (m.seq < oldest_kept OR cfg.retain_max_len = 0)
              AND NOT EXISTS (SELECT 1 FROM {s}.deliveries AS d WHERE d.seq = m.seq);
            GET DIAGNOSTICS k = ROW_COUNT;
            n := n + k;
        END IF;
    END IF;
    RETURN n;
END $$;

-- Moves messages a group owes to the dead letters, for that group.
-- With `pending_only`, only those delivered and not yet settled.
CREATE FUNCTION {s}.bury(
    q bigint, gid bigint, seqs bigint[], reason text, pending_only boolean, now bigint
) RETURNS bigint[] LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    buried bigint[];
BEGIN
    WITH gone AS (
        DELETE FROM {s}.deliveries AS d
        WHERE d.group_id = gid AND d.seq = ANY(seqs)
          AND (NOT pending_only OR d.consumer IS NOT NULL)
        RETURNING d.seq, d.delivery_count
    ), letters AS (
        INSERT INTO {s}.dead_letters (queue_id, original_seq, group_name, reason, attempts,
            enqueued_at, dead_lettered_at, payload, headers, dedup_id)
        SELECT q, m.seq, (SELECT name FROM {s}.groups WHERE id = gid), reason,
               gone.delivery_count, m.enqueued_at, now, m.payload, m.headers, m.dedup_id
        FROM gone JOIN {s}.messages AS m ON m.queue_id = q AND m.seq = gone.seq
        ORDER BY m.seq
    )
    SELECT array_agg(gone.seq ORDER BY gone.seq) INTO buried FROM gone;
    IF buried IS NULL THEN
        RETURN '{}';
    END IF;
    UPDATE {s}.queues SET dead_lettered_total = dead_lettered_total + cardinality(buried)
    WHERE id = q;
    PERFORM {s}.settle(q, buried, now);
    RETURN buried;
END $$;

-- Expires up to `lim` messages whose time to live has passed: dropped, or
-- dead-lettered for each group that still owed them (once, with no
-- group, if none did). Returns how many.
CREATE FUNCTION {s}.expire(q bigint, lim integer, now bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    cfg {s}.queues%ROWTYPE;
    n bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {s}.messages AS m
                   WHERE m.queue_id = q AND m.expires_at <= now AND m.acked_at IS NULL) THEN
        RETURN 0;
    END IF;
    SELECT * INTO cfg FROM {s}.queues WHERE id = q;
    WITH due AS (
        SELECT m.* FROM {s}.messages AS m
        WHERE m.queue_id = q AND m.expires_at <= now AND m.acked_at IS NULL
        ORDER BY m.expires_at LIMIT lim
        FOR UPDATE SKIP LOCKED
    ), owed AS (
        DELETE FROM {s}.deliveries AS d USING due
        WHERE d.seq = due.seq
        RETURNING d.seq, d.group_id, d.delivery_count
    ), letters AS (
        INSERT INTO {s}.dead_letters (queue_id, original_seq, group_name, reason, attempts,
            enqueued_at, dead_lettered_at, payload, headers, dedup_id)
        SELECT q, due.seq, g.name, 'expired', coalesce(owed.delivery_count, 0),
               due.enqueued_at, now, due.payload, due.headers, due.dedup_id
        FROM due
        LEFT JOIN owed ON owed.seq = due.seq
        LEFT JOIN {s}.groups AS g ON g.id = owed.group_id
        WHERE cfg.dead_letter_expired
        ORDER BY due.seq, g.name
    ), gone AS (
        DELETE FROM {s}.messages AS m USING due
        WHERE m.queue_id = q AND m.seq = due.seq
        RETURNING m.seq
    )
    SELECT count(*) INTO n FROM gone;
    IF n > 0 THEN
        UPDATE {s}.queues SET expired_total = expired_total + n WHERE id = q;
    END IF;
    RETURN n;
END $$;

-- The group's id, creating it (owing every stored message that has not
-- expired) on first use.
CREATE FUNCTION {s}.group_id(q bigint, group_name text, now bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    gid bigint;
BEGIN
    SELECT g.id INTO gid FROM {s}.groups AS g WHERE g.queue_id = q AND g.name = group_name;
    IF FOUND THEN
        RETURN gid;
    END IF;
    PERFORM {s}.own_queue(q);
    IF NOT EXISTS (SELECT 1 FROM {s}.queues WHERE id = q) THEN
        PERFORM {s}.queue_not_found();
    END IF;
    INSERT INTO {s}.groups (queue_id, name, created_at) VALUES (q, group_name, now)
    ON CONFLICT (queue_id, name) DO NOTHING
    RETURNING id INTO gid;
    IF NOT FOUND THEN
        SELECT g.id INTO gid FROM {s}.groups AS g WHERE g.queue_id = q AND g.name = group_name;
        RETURN gid;
    END IF;
    INSERT INTO {s}.deliveries (seq, group_id, ready, visible_at, expires_at)
    SELECT m.seq, gid, m.deliver_at <= now, m.deliver_at, m.expires_at FROM {s}.messages AS m
    WHERE m.queue_id = q AND (m.expires_at IS NULL OR m.expires_at > now);
    RETURN gid;
END $$;

-- Hands up to `max_messages` due messages to a consumer of a group, in
-- send order. What has come due (a delay, a retry, a visibility timeout)
-- first takes its place in the ready line, or, out of deliveries, goes to
-- the dead letters.
CREATE FUNCTION {s}.receive(q bigint, group_name text, consumer_name text, max_messages integer)
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
    FROM taken AS t JOIN {s}.messages AS m ON m.queue_id = q AND m.seq = t.seq
    ORDER BY t.seq;
END $$;

-- A group's id (null: no such group), or the queue's absence as an error.
CREATE FUNCTION {s}.group_of(q bigint, group_name text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    gid bigint;
BEGIN
    SELECT g.id INTO gid FROM {s}.groups AS g WHERE g.queue_id = q AND g.name = group_name;
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM {s}.queues WHERE id = q) THEN
        PERFORM {s}.queue_not_found();
    END IF;
    RETURN gid;
END $$;

-- Acks messages delivered to a group; returns those that were pending.
CREATE FUNCTION {s}.ack(q bigint, group_name text, seqs bigint[], synchronous boolean)
RETURNS bigint[] LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    gid bigint;
    alone boolean;
    acked bigint[];
BEGIN
    IF NOT synchronous THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    gid := {s}.group_of(q, group_name);
    IF gid IS NULL THEN
        RETURN '{}';
    END IF;
    PERFORM {s}.share_queue(q);
    SELECT (SELECT count(*) = 1 FROM {s}.groups WHERE queue_id = q)
           AND coalesce(retain_max_len, 0) = 0 AND coalesce(retain_max_age_ms, 0) = 0
    INTO alone FROM {s}.queues WHERE id = q;
    IF alone THEN
        -- The only group, and nothing retained: its acked messages leave
        -- with its deliveries, in one statement.
        WITH gone AS (
            DELETE FROM {s}.deliveries AS d
            WHERE d.seq = ANY(seqs) AND d.group_id = gid AND d.consumer IS NOT NULL
            RETURNING d.seq
        ), left_queue AS (
            DELETE FROM {s}.messages AS m USING gone
            WHERE m.queue_id = q AND m.seq = gone.seq
        )
        SELECT array_agg(gone.seq ORDER BY gone.seq) INTO acked FROM gone;
        RETURN coalesce(acked, '{}');
    END IF;
    WITH gone AS (
        DELETE FROM {s}.deliveries AS d
        WHERE d.seq = ANY(seqs) AND d.group_id = gid AND d.consumer IS NOT NULL
        RETURNING d.seq
    )
    SELECT array_agg(gone.seq ORDER BY gone.seq) INTO acked FROM gone;
    IF acked IS NULL THEN
        RETURN '{}';
    END IF;
    PERFORM {s}.settle(q, acked, {s}.now_ms());
    RETURN acked;
END $$;

-- Gives delivered messages back: to be delivered again after `delay_ms`,
-- or (with a reason) to the dead letters. Returns those that were pending.
CREATE FUNCTION {s}.nack(
    q bigint, group_name text, seqs bigint[], delay_ms bigint, reason text
) RETURNS bigint[] LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    now bigint := {s}.now_ms();
    gid bigint;
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
    WITH back AS (
        UPDATE {s}.deliveries AS d
        SET consumer = NULL, ready = false, visible_at = now + delay_ms
        WHERE d.seq = ANY(seqs) AND d.group_id = gid AND d.consumer IS NOT NULL
        RETURNING d.seq
    )
    SELECT array_agg(back.seq ORDER BY back.seq) INTO given FROM back;
    RETURN coalesce(given, '{}');
END $$;

-- Moves dead letters (all of them when `ids` is null) back to their
-- queue: to the group that gave up on them, or to every group for
-- expired ones. Returns how many.
CREATE FUNCTION {s}.requeue(q bigint, ids bigint[]) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    now bigint := {s}.now_ms();
    n bigint;
BEGIN
    PERFORM {s}.share_queue(q);
    WITH letters AS (
        DELETE FROM {s}.dead_letters AS l
        WHERE l.queue_id = q AND (ids IS NULL OR l.id = ANY(ids))
        RETURNING l.*
    ), back AS (
        INSERT INTO {s}.messages AS m
            (queue_id, seq, payload, headers, dedup_id, enqueued_at, deliver_at)
        SELECT DISTINCT ON (l.original_seq) q, l.original_seq, l.payload, l.headers,
               l.dedup_id, l.enqueued_at, now
        FROM letters AS l ORDER BY l.original_seq, l.id
        ON CONFLICT (queue_id, seq) DO UPDATE SET acked_at = NULL
    ), owed AS (
        INSERT INTO {s}.deliveries (seq, group_id, ready, visible_at)
        SELECT DISTINCT ON (l.original_seq, g.id) l.original_seq, g.id, true, now
        FROM letters AS l JOIN {s}.groups AS g
          ON g.queue_id = q AND (l.group_name IS NULL OR g.name = l.group_name)
        ON CONFLICT (seq, group_id) DO UPDATE
            SET ready = true, visible_at = excluded.visible_at, delivery_count = 0,
                consumer = NULL
    )
    SELECT count(*) INTO n FROM letters;
    RETURN n;
END $$;

-- Deletes every message of a queue (not its dead letters); returns how many.
CREATE FUNCTION {s}.purge(q bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM {s}.own_queue(q);
    DELETE FROM {s}.deliveries AS d USING {s}.groups AS g
    WHERE g.queue_id = q AND d.group_id = g.id;
    DELETE FROM {s}.messages WHERE queue_id = q;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Deletes a queue with everything it holds.
CREATE FUNCTION {s}.drop_queue(q bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {s}.own_queue(q);
    PERFORM {s}.purge(q);
    DELETE FROM {s}.consumers AS c USING {s}.groups AS g
    WHERE g.queue_id = q AND c.group_id = g.id;
    DELETE FROM {s}.groups WHERE queue_id = q;
    DELETE FROM {s}.dead_letters WHERE queue_id = q;
    DELETE FROM {s}.dedup WHERE queue_id = q;
    DELETE FROM {s}.queues WHERE id = q;
END $$;

-- Applies time to a queue: expiries and retention. Returns how many
-- messages left.
CREATE FUNCTION {s}.tidy(q bigint, lim integer) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    now bigint := {s}.now_ms();
BEGIN
    RETURN {s}.expire(q, lim, now) + {s}.trim_retained(q, now);
END $$;

-- Record writes. Keys compared by transactions are locked first, so two
-- transactions that expect the same record take turns.
CREATE FUNCTION {s}.expect(t text, k bytea, v text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    found_value text;
BEGIN
    PERFORM pg_advisory_xact_lock({record_lock}, hashtext(t || ':' || encode(k, 'hex')));
    SELECT r.value INTO found_value FROM {s}.records AS r WHERE r.tbl = t AND r.key = k FOR UPDATE;
    IF found_value IS DISTINCT FROM v THEN
        RAISE EXCEPTION 'record changed' USING ERRCODE = 'TD004';
    END IF;
END $$;

CREATE FUNCTION {s}.add(t text, k bytea, delta bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    stored text;
    sum bigint;
BEGIN
    SELECT r.value INTO stored FROM {s}.records AS r WHERE r.tbl = t AND r.key = k FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO {s}.records (tbl, key, value) VALUES (t, k, delta::text)
        ON CONFLICT (tbl, key) DO NOTHING;
        IF FOUND THEN
            RETURN;
        END IF;
        SELECT r.value INTO stored FROM {s}.records AS r WHERE r.tbl = t AND r.key = k FOR UPDATE;
    END IF;
    IF stored !~ '^\s*[-+]?[0-9]{1,19}\s*$' THEN
        RAISE EXCEPTION 'not a counter' USING ERRCODE = 'TD005';
    END IF;
    BEGIN
        sum := trim(stored)::bigint + delta;
    EXCEPTION WHEN numeric_value_out_of_range THEN
        RAISE EXCEPTION 'not a counter' USING ERRCODE = 'TD005';
    END;
    UPDATE {s}.records SET value = sum::text WHERE tbl = t AND key = k;
END $$;
