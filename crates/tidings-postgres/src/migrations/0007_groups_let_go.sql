-- Deleting a consumer group (a group of a process that is gone, say).
--
-- The group's deliveries go; each message they were for and that no other
-- group owes is settled as an ack of the last group would settle it
-- (deleted, or kept for the queue's retention). Under the queue's own
-- lock, as a purge: no receive or ack of the queue runs meanwhile.

CREATE FUNCTION {s}.delete_group(q bigint, group_name text) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    gid bigint;
    owed bigint[];
BEGIN
    PERFORM {s}.own_queue(q);
    gid := {s}.group_of(q, group_name);
    IF gid IS NULL THEN
        RETURN false;
    END IF;
    WITH gone AS (
        DELETE FROM {s}.deliveries AS d WHERE d.group_id = gid RETURNING d.seq
    )
    SELECT array_agg(gone.seq ORDER BY gone.seq) INTO owed FROM gone;
    DELETE FROM {s}.consumers WHERE group_id = gid;
    DELETE FROM {s}.groups WHERE id = gid;
    IF owed IS NOT NULL THEN
        PERFORM {s}.settle(q, owed, {s}.now_ms());
    END IF;
    RETURN true;
END $$;
