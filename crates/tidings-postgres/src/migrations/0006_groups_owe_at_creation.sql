-- A new group owes the messages committed before it as ready.
--
-- A receive reads the clock when it starts, then creates its group,
-- waiting for the queue's lock while sends finish. A send that started
-- after that reading and committed before the lock was granted stored a
-- message "sent later" than the group's clock: version 1 owed it as not
-- yet due, to be brought back only at the group's next tending, while the
-- messages sent after it were ready at once and overtook it. The group now
-- reads the clock again once it holds the lock.

CREATE OR REPLACE FUNCTION {s}.group_id(q bigint, group_name text, now bigint) RETURNS bigint
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
    -- Every message committed before the lock was sent before this reading.
    now := greatest(now, {s}.now_ms());
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
