-- Counters as deltas: an add inserts a row instead of updating the
-- counter's record, so concurrent transactions that add to one counter
-- (every publish of an action, every delivery of a subscription) no longer
-- wait for one another's commit.
--
-- A record that has been added to carries a generation (`gen`, null for a
-- record never added to). Its value is the record's text plus the deltas
-- of its generation. Writing the record over (put) starts a new
-- generation, so deltas of an add that raced with the write are left
-- behind, as if the add came first; so are the deltas of a deleted record.
-- `fold_counters` moves deltas into their records and drops those left
-- behind, in the background.

ALTER TABLE {s}.records ADD COLUMN gen bigint;

CREATE SEQUENCE {s}.counter_gens;

CREATE TABLE {s}.counter_deltas (
    tbl text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    gen bigint NOT NULL,
    delta bigint NOT NULL
);
CREATE INDEX counter_deltas_key ON {s}.counter_deltas (tbl, key);

-- Generations of records that were counters before this migration.
UPDATE {s}.records SET gen = nextval('{s}.counter_gens')
WHERE value ~ '^\s*[-+]?[0-9]{1,19}\s*$';

-- The value a counter shows: its record's text plus its deltas (text that
-- is not a number is shown as it is).
CREATE FUNCTION {s}.counter_text(stored text, total numeric) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN total IS NULL OR stored !~ '^\s*[-+]?[0-9]+\s*$' THEN stored
        ELSE (trim(stored)::numeric + total)::text
    END
$$;

-- A record's value as reads show it.
CREATE FUNCTION {s}.record_value(t text, k bytea, stored text, g bigint) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN g IS NULL THEN stored ELSE {s}.counter_text(stored,
        (SELECT sum(d.delta) FROM {s}.counter_deltas AS d
         WHERE d.tbl = t AND d.key = k AND d.gen = g)) END
$$;

-- Adds take the record's lock shared, so they run side by side; `expect`
-- takes it alone, so a transaction that compares a counter and writes it
-- sees every add that committed before it and none during it.
CREATE OR REPLACE FUNCTION {s}.add(t text, k bytea, delta bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    stored text;
    g bigint;
BEGIN
    PERFORM pg_advisory_xact_lock_shared({record_lock}, hashtext(t || ':' || encode(k, 'hex')));
    LOOP
        SELECT r.value, r.gen INTO stored, g FROM {s}.records AS r WHERE r.tbl = t AND r.key = k;
        IF NOT FOUND THEN
            INSERT INTO {s}.records (tbl, key, value, gen)
            VALUES (t, k, '0', nextval('{s}.counter_gens'))
            ON CONFLICT (tbl, key) DO NOTHING
            RETURNING value, gen INTO stored, g;
            EXIT WHEN FOUND;
        ELSIF g IS NULL THEN
            -- The first add to a record written by a put: it becomes a
            -- counter (once; the row is locked only this time).
            UPDATE {s}.records AS r SET gen = nextval('{s}.counter_gens')
            WHERE r.tbl = t AND r.key = k AND r.gen IS NULL
            RETURNING r.value, r.gen INTO stored, g;
            EXIT WHEN FOUND;
        ELSE
            EXIT;
        END IF;
    END LOOP;
    IF stored !~ '^\s*[-+]?[0-9]{1,19}\s*$' THEN
        RAISE EXCEPTION 'not a counter' USING ERRCODE = 'TD005';
    END IF;
    BEGIN
        PERFORM trim(stored)::bigint;
    EXCEPTION WHEN numeric_value_out_of_range THEN
        RAISE EXCEPTION 'not a counter' USING ERRCODE = 'TD005';
    END;
    INSERT INTO {s}.counter_deltas (tbl, key, gen, delta) VALUES (t, k, g, delta);
END $$;

CREATE OR REPLACE FUNCTION {s}.expect(t text, k bytea, v text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    found_value text;
    g bigint;
BEGIN
    PERFORM pg_advisory_xact_lock({record_lock}, hashtext(t || ':' || encode(k, 'hex')));
    SELECT r.value, r.gen INTO found_value, g FROM {s}.records AS r
    WHERE r.tbl = t AND r.key = k FOR UPDATE;
    -- A statement of its own, after the locks: it sees every add committed.
    IF g IS NOT NULL THEN
        found_value := {s}.record_value(t, k, found_value, g);
    END IF;
    IF found_value IS DISTINCT FROM v THEN
        RAISE EXCEPTION 'record changed' USING ERRCODE = 'TD004';
    END IF;
END $$;

-- Moves the deltas of up to `lim` counters into their records, and drops
-- deltas left behind by puts and deletes. Counters locked by a
-- transaction are skipped (folded next time). Returns the deltas removed.
CREATE FUNCTION {s}.fold_counters(lim integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    tbls text[];
    keys bytea[];
    folded bigint;
    dropped bigint;
BEGIN
    SELECT array_agg(c.tbl), array_agg(c.key) INTO tbls, keys FROM (
        SELECT DISTINCT d.tbl, d.key FROM {s}.counter_deltas AS d LIMIT lim
    ) AS c;
    IF tbls IS NULL THEN
        RETURN 0;
    END IF;
    -- Deltas of records gone: nothing shows them.
    DELETE FROM {s}.counter_deltas AS d
    USING unnest(tbls, keys) AS c(tbl, key)
    WHERE d.tbl = c.tbl AND d.key = c.key
      AND NOT EXISTS (SELECT 1 FROM {s}.records AS r WHERE r.tbl = d.tbl AND r.key = d.key);
    GET DIAGNOSTICS dropped = ROW_COUNT;
    SELECT array_agg(l.tbl), array_agg(l.key) INTO tbls, keys FROM (
        SELECT r.tbl, r.key FROM {s}.records AS r
        JOIN unnest(tbls, keys) AS c(tbl, key) ON r.tbl = c.tbl AND r.key = c.key
        ORDER BY r.tbl, r.key
        FOR UPDATE OF r SKIP LOCKED
    ) AS l;
    IF tbls IS NULL THEN
        RETURN dropped;
    END IF;
    -- A statement of its own, after the locks: the records cannot change
    -- under it, and it sees every delta committed.
    WITH gone AS (
        DELETE FROM {s}.counter_deltas AS d
        USING unnest(tbls, keys) AS c(tbl, key)
        WHERE d.tbl = c.tbl AND d.key = c.key
        RETURNING d.tbl, d.key, d.gen, d.delta
    ), sums AS (
        SELECT gone.tbl, gone.key, gone.gen, sum(gone.delta) AS total, count(*) AS n
        FROM gone GROUP BY gone.tbl, gone.key, gone.gen
    ), moved AS (
        UPDATE {s}.records AS r SET value = {s}.counter_text(r.value, sums.total)
        FROM sums WHERE r.tbl = sums.tbl AND r.key = sums.key AND r.gen = sums.gen
    )
    SELECT coalesce(sum(sums.n), 0) INTO folded FROM sums;
    RETURN dropped + folded;
END $$;
