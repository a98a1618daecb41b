-- Queue Status in bounded time, whatever the size of the queue and its history.
--
-- queue_counts: queued and running runs per organization and capability set, kept exact by the
-- trigger below in the same transaction as every change to a run's status (insert, update, delete),
-- so no code path can forget them. Tiles and "jobs no online machine can run" read a handful of rows.
CREATE TABLE queue_counts (
    organization_id BIGINT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    requires TEXT NOT NULL,
    queued BIGINT NOT NULL DEFAULT 0,
    running BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (organization_id, requires)
);

INSERT INTO queue_counts (organization_id, requires, queued, running)
SELECT organization_id, requires,
       COUNT(*) FILTER (WHERE status = 'queued'), COUNT(*) FILTER (WHERE status = 'running')
FROM runs WHERE status IN ('queued', 'running')
GROUP BY organization_id, requires;

CREATE FUNCTION runs_counted() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE TRIGGER runs_counted_on_insert AFTER INSERT ON runs
FOR EACH ROW EXECUTE FUNCTION runs_counted();
CREATE TRIGGER runs_counted_on_update AFTER UPDATE OF status ON runs
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION runs_counted();
CREATE TRIGGER runs_counted_on_delete AFTER DELETE ON runs
FOR EACH ROW EXECUTE FUNCTION runs_counted();

-- The oldest queued run of an organization, one index step away.
CREATE INDEX runs_queued_by_age ON runs (organization_id, created_at) WHERE status = 'queued';

-- Queue depth once a minute per organization, written by one replica at a time: the depth chart reads
-- at most 60 rows.
CREATE TABLE queue_samples (
    organization_id BIGINT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    minute TIMESTAMP NOT NULL,
    queued BIGINT NOT NULL,
    PRIMARY KEY (organization_id, minute)
);
