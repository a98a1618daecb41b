CREATE OR REPLACE FUNCTION runs_waits_on_start() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.started_at IS NOT NULL THEN
        UPDATE run_waits
        SET started = started - 1,
            waited_ms = waited_ms - ROUND(EXTRACT(EPOCH FROM OLD.started_at - OLD.created_at) * 1000)::bigint
        WHERE organization_id = OLD.organization_id AND minute = date_trunc('minute', OLD.started_at);
    END IF;
    IF NEW.started_at IS NOT NULL THEN
        INSERT INTO run_waits AS w (organization_id, minute, started, waited_ms)
        VALUES (NEW.organization_id, date_trunc('minute', NEW.started_at), 1,
                ROUND(EXTRACT(EPOCH FROM NEW.started_at - NEW.created_at) * 1000)::bigint)
        ON CONFLICT (organization_id, minute) DO UPDATE
        SET started = w.started + 1, waited_ms = w.waited_ms + excluded.waited_ms;
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION runs_counted_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queue_counts AS c (organization_id, requires, queued, running)
    SELECT organization_id, requires,
           COUNT(*) FILTER (WHERE status = 'queued'), COUNT(*) FILTER (WHERE status = 'running')
    FROM inserted WHERE status IN ('queued', 'running')
    GROUP BY organization_id, requires
    ON CONFLICT (organization_id, requires) DO UPDATE
    SET queued = c.queued + excluded.queued, running = c.running + excluded.running;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION runs_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status IN ('queued', 'running') THEN
        UPDATE queue_counts
        SET queued = queued - (OLD.status = 'queued')::int,
            running = running - (OLD.status = 'running')::int
        WHERE organization_id = OLD.organization_id AND requires = OLD.requires;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status IN ('queued', 'running') THEN
        INSERT INTO queue_counts AS c (organization_id, requires, queued, running)
        VALUES (NEW.organization_id, NEW.requires,
                (NEW.status = 'queued')::int, (NEW.status = 'running')::int)
        ON CONFLICT (organization_id, requires) DO UPDATE
        SET queued = c.queued + excluded.queued, running = c.running + excluded.running;
    END IF;
    RETURN NULL;
END;
$$;

DROP FUNCTION count_waits(BIGINT, TIMESTAMP, TIMESTAMP, INT);
DROP FUNCTION count_runs(BIGINT, TEXT, INT, INT);
DROP FUNCTION counter_slot();

-- Each key's slots added up into slot 0, then the column goes.
CREATE TEMP TABLE run_waits_summed AS
SELECT organization_id, minute, SUM(started)::bigint AS started, SUM(waited_ms)::bigint AS waited_ms
FROM run_waits GROUP BY organization_id, minute;
DELETE FROM run_waits;
ALTER TABLE run_waits DROP CONSTRAINT run_waits_pkey;
ALTER TABLE run_waits DROP COLUMN slot;
INSERT INTO run_waits (organization_id, minute, started, waited_ms)
SELECT organization_id, minute, started, waited_ms FROM run_waits_summed;
ALTER TABLE run_waits ADD PRIMARY KEY (organization_id, minute);
DROP TABLE run_waits_summed;

CREATE TEMP TABLE queue_counts_summed AS
SELECT organization_id, requires, SUM(queued)::bigint AS queued, SUM(running)::bigint AS running
FROM queue_counts GROUP BY organization_id, requires;
DELETE FROM queue_counts;
ALTER TABLE queue_counts DROP CONSTRAINT queue_counts_pkey;
ALTER TABLE queue_counts DROP COLUMN slot;
INSERT INTO queue_counts (organization_id, requires, queued, running)
SELECT organization_id, requires, queued, running FROM queue_counts_summed;
ALTER TABLE queue_counts ADD PRIMARY KEY (organization_id, requires);
DROP TABLE queue_counts_summed;
