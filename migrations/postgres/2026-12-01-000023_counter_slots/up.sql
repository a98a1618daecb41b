-- Claims and reports of one organization no longer take turns on one counter row. Every change to a
-- run's status added to the organization's row in queue_counts (and every start to its minute's row
-- in run_waits) and held that row until its commit, flush to disk included: concurrent claims and
-- reports waited for each other. Each count is now kept in up to 16 rows (`slot`); a transaction
-- adds its changes, negative ones too, to the slot its transaction id picks, and readers add the
-- rows of a key up (`queue::counts`). A slot may hold a negative count; the sum is exact.
ALTER TABLE queue_counts ADD COLUMN slot SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE queue_counts DROP CONSTRAINT queue_counts_pkey;
ALTER TABLE queue_counts ADD PRIMARY KEY (organization_id, requires, slot);

ALTER TABLE run_waits ADD COLUMN slot SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE run_waits DROP CONSTRAINT run_waits_pkey;
ALTER TABLE run_waits ADD PRIMARY KEY (organization_id, minute, slot);

-- The slot of the current transaction (which has an id: it is changing a run).
CREATE FUNCTION counter_slot() RETURNS smallint LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN (pg_current_xact_id()::text::bigint % 16)::smallint;
END;
$$;

CREATE FUNCTION count_runs(organization BIGINT, requires_set TEXT, queued_delta INT, running_delta INT)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queue_counts AS c (organization_id, requires, slot, queued, running)
    VALUES (organization, requires_set, counter_slot(), queued_delta, running_delta)
    ON CONFLICT (organization_id, requires, slot) DO UPDATE
    SET queued = c.queued + excluded.queued, running = c.running + excluded.running;
END;
$$;

CREATE OR REPLACE FUNCTION runs_counted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was_counted boolean := TG_OP IN ('UPDATE', 'DELETE') AND OLD.status IN ('queued', 'running');
    is_counted boolean := TG_OP IN ('INSERT', 'UPDATE') AND NEW.status IN ('queued', 'running');
BEGIN
    IF was_counted AND is_counted
       AND OLD.organization_id = NEW.organization_id AND OLD.requires = NEW.requires THEN
        -- One row changes once: queued to running, say.
        PERFORM count_runs(NEW.organization_id, NEW.requires,
                           (NEW.status = 'queued')::int - (OLD.status = 'queued')::int,
                           (NEW.status = 'running')::int - (OLD.status = 'running')::int);
        RETURN NULL;
    END IF;
    IF was_counted THEN
        PERFORM count_runs(OLD.organization_id, OLD.requires,
                           -(OLD.status = 'queued')::int, -(OLD.status = 'running')::int);
    END IF;
    IF is_counted THEN
        PERFORM count_runs(NEW.organization_id, NEW.requires,
                           (NEW.status = 'queued')::int, (NEW.status = 'running')::int);
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION runs_counted_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queue_counts AS c (organization_id, requires, slot, queued, running)
    SELECT organization_id, requires, counter_slot(),
           COUNT(*) FILTER (WHERE status = 'queued'), COUNT(*) FILTER (WHERE status = 'running')
    FROM inserted WHERE status IN ('queued', 'running')
    GROUP BY organization_id, requires
    ON CONFLICT (organization_id, requires, slot) DO UPDATE
    SET queued = c.queued + excluded.queued, running = c.running + excluded.running;
    RETURN NULL;
END;
$$;

CREATE FUNCTION count_waits(organization BIGINT, started_at TIMESTAMP, created_at TIMESTAMP, sign INT)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO run_waits AS w (organization_id, minute, slot, started, waited_ms)
    VALUES (organization, date_trunc('minute', started_at), counter_slot(), sign,
            sign * ROUND(EXTRACT(EPOCH FROM started_at - created_at) * 1000)::bigint)
    ON CONFLICT (organization_id, minute, slot) DO UPDATE
    SET started = w.started + excluded.started, waited_ms = w.waited_ms + excluded.waited_ms;
END;
$$;

-- A start undone (the run given back to the queue) is taken off its minute; a new start added.
CREATE OR REPLACE FUNCTION runs_waits_on_start() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.started_at IS NOT NULL THEN
        PERFORM count_waits(OLD.organization_id, OLD.started_at, OLD.created_at, -1);
    END IF;
    IF NEW.started_at IS NOT NULL THEN
        PERFORM count_waits(NEW.organization_id, NEW.started_at, NEW.created_at, 1);
    END IF;
    RETURN NULL;
END;
$$;
