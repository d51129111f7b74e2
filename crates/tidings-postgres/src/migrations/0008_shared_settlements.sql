-- Settlements that share statements.
--
-- A transaction that compares a record and writes it over (a delivery's
-- record, at every attempt) sent two statements per record: `expect`, then
-- the put. Transactions committed together (group commit) sent them once
-- per member, and one `add` per counter, so a commit of many settlements
-- cost many statements. `swap_records` compares and writes any number of
-- records, `delete_records` deletes any number, `add_many` adds to any
-- number of counters: one statement each per commit, however many it
-- carries.

-- Compares each record with what is expected (null: absent) under the same
-- locks as `expect`, in the order given (the client sorts by key), and,
-- if every one matched, writes them all. Returns 0, or the position
-- (from 1) of the first record that did not match: then nothing was
-- written.
CREATE FUNCTION {s}.swap_records(tbls text[], keys bytea[], expected text[], vals text[])
RETURNS integer LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    found_value text;
    g bigint;
BEGIN
    FOR i IN 1 .. coalesce(array_length(tbls, 1), 0) LOOP
        PERFORM pg_advisory_xact_lock({record_lock},
            hashtext(tbls[i] || ':' || encode(keys[i], 'hex')));
        SELECT r.value, r.gen INTO found_value, g FROM {s}.records AS r
        WHERE r.tbl = tbls[i] AND r.key = keys[i] FOR UPDATE;
        -- A statement of its own, after the locks: it sees every add committed.
        IF g IS NOT NULL THEN
            found_value := {s}.record_value(tbls[i], keys[i], found_value, g);
        END IF;
        IF found_value IS DISTINCT FROM expected[i] THEN
            RETURN i;
        END IF;
    END LOOP;
    -- Writing a counter over starts a new generation of its deltas.
    INSERT INTO {s}.records AS r (tbl, key, value)
    SELECT * FROM unnest(tbls, keys, vals)
    ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value,
        gen = CASE WHEN r.gen IS NULL THEN NULL ELSE nextval('{s}.counter_gens') END;
    RETURN 0;
END $$;

-- `add` of each key its delta, in one statement (keys distinct, in key
-- order). A record that is not a counter fails it with `TD005`, its
-- position (from 1) as the error's detail.
CREATE FUNCTION {s}.add_many(tbls text[], keys bytea[], deltas bigint[])
RETURNS void LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    stored text;
    g bigint;
    gens bigint[] := '{}';
BEGIN
    FOR i IN 1 .. coalesce(array_length(tbls, 1), 0) LOOP
        PERFORM pg_advisory_xact_lock_shared({record_lock},
            hashtext(tbls[i] || ':' || encode(keys[i], 'hex')));
        LOOP
            SELECT r.value, r.gen INTO stored, g FROM {s}.records AS r
            WHERE r.tbl = tbls[i] AND r.key = keys[i];
            IF NOT FOUND THEN
                INSERT INTO {s}.records (tbl, key, value, gen)
                VALUES (tbls[i], keys[i], '0', nextval('{s}.counter_gens'))
                ON CONFLICT (tbl, key) DO NOTHING
                RETURNING value, gen INTO stored, g;
                EXIT WHEN FOUND;
            ELSIF g IS NULL THEN
                -- The first add to a record written by a put: it becomes a
                -- counter (once; the row is locked only this time).
                UPDATE {s}.records AS r SET gen = nextval('{s}.counter_gens')
                WHERE r.tbl = tbls[i] AND r.key = keys[i] AND r.gen IS NULL
                RETURNING r.value, r.gen INTO stored, g;
                EXIT WHEN FOUND;
            ELSE
                EXIT;
            END IF;
        END LOOP;
        -- A whole number a bigint holds (no exception block: each would be
        -- a subtransaction).
        IF NOT (CASE WHEN stored ~ '^\s*[-+]?[0-9]{1,19}\s*$'
                     THEN trim(stored)::numeric BETWEEN -9223372036854775808
                                                    AND 9223372036854775807
                     ELSE false END) THEN
            RAISE EXCEPTION 'not a counter' USING ERRCODE = 'TD005', DETAIL = i::text;
        END IF;
        gens := gens || g;
    END LOOP;
    INSERT INTO {s}.counter_deltas (tbl, key, gen, delta)
    SELECT * FROM unnest(tbls, keys, gens, deltas);
END $$;

-- Deletes records by key (keys distinct), each by its whole key; returns
-- how many there were.
CREATE FUNCTION {s}.delete_records(tbls text[], keys bytea[])
RETURNS bigint LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    gone bigint := 0;
    one bigint;
BEGIN
    FOR i IN 1 .. coalesce(array_length(tbls, 1), 0) LOOP
        DELETE FROM {s}.records AS r WHERE r.tbl = tbls[i] AND r.key = keys[i];
        GET DIAGNOSTICS one = ROW_COUNT;
        gone := gone + one;
    END LOOP;
    RETURN gone;
END $$;

-- Plans that do not depend on the tables' statistics.
--
-- A queue's tables change size faster than autovacuum measures them (a
-- minute apart at best): statistics taken while a queue was nearly empty
-- made the planner read every ready delivery of a group and sort them to
-- take the first (7.6 ms with 20,000 waiting, auto_explain during a
-- drain), and read every message of the queue to delete the one acked
-- (0.8 ms). Every lookup these functions make is by a key or along an
-- index in its order, so they do without bitmap and sequential scans, and
-- the ack deletes each message by its whole key.

ALTER FUNCTION {s}.receive(bigint, text, text, integer, boolean)
    SET enable_bitmapscan = off SET enable_seqscan = off;
ALTER FUNCTION {s}.nack(bigint, text, bigint[], bigint, text)
    SET enable_bitmapscan = off SET enable_seqscan = off;
ALTER FUNCTION {s}.settle(bigint, bigint[], bigint)
    SET enable_bitmapscan = off SET enable_seqscan = off;

CREATE OR REPLACE FUNCTION {s}.ack(q bigint, group_name text, seqs bigint[], synchronous boolean)
RETURNS bigint[] LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_bitmapscan = off SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    gid bigint;
    alone boolean;
    acked bigint[];
    one bigint;
BEGIN
    IF NOT synchronous THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    gid := {s}.group_of(q, group_name);
    IF gid IS NULL THEN
        RETURN '{}';
    END IF;
    PERFORM {s}.share_queue(q);
    WITH gone AS (
        DELETE FROM {s}.deliveries AS d
        WHERE d.seq = ANY(seqs) AND d.group_id = gid AND d.consumer IS NOT NULL
        RETURNING d.seq
    )
    SELECT array_agg(gone.seq ORDER BY gone.seq) INTO acked FROM gone;
    IF acked IS NULL THEN
        RETURN '{}';
    END IF;
    SELECT (SELECT count(*) = 1 FROM {s}.groups WHERE queue_id = q)
           AND coalesce(retain_max_len, 0) = 0 AND coalesce(retain_max_age_ms, 0) = 0
    INTO alone FROM {s}.queues WHERE id = q;
    IF alone THEN
        -- The only group, and nothing retained: its acked messages leave
        -- with its deliveries, each by its whole key (with `seq = ANY`, a
        -- plan may scan the queue's messages and filter by seq).
        FOREACH one IN ARRAY acked LOOP
            DELETE FROM {s}.messages AS m WHERE m.queue_id = q AND m.seq = one;
        END LOOP;
    ELSE
        PERFORM {s}.settle(q, acked, {s}.now_ms());
    END IF;
    RETURN acked;
END $$;
