-- Queue Status in bounded time, whatever the size of the queue and its history.
--
-- queue_counts: queued and running runs per organization and capability set, kept exact by the
-- triggers below in the same transaction as every change to a run's status (insert, update, delete),
-- so no code path can forget them. Tiles and "jobs no online machine can run" read a handful of rows.
CREATE TABLE queue_counts (
    organization_id BIGINT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    requires TEXT NOT NULL,
    queued BIGINT NOT NULL DEFAULT 0,
    running BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (organization_id, requires)
);

INSERT INTO queue_counts (organization_id, requires, queued, running)
SELECT organization_id, requires, SUM(status = 'queued'), SUM(status = 'running')
FROM runs WHERE status IN ('queued', 'running')
GROUP BY organization_id, requires;

CREATE TRIGGER runs_counted_on_insert AFTER INSERT ON runs
WHEN NEW.status IN ('queued', 'running')
BEGIN
    INSERT INTO queue_counts (organization_id, requires, queued, running)
    VALUES (NEW.organization_id, NEW.requires, NEW.status = 'queued', NEW.status = 'running')
    ON CONFLICT (organization_id, requires) DO UPDATE
    SET queued = queued + excluded.queued, running = running + excluded.running;
END;

CREATE TRIGGER runs_counted_on_update AFTER UPDATE OF status ON runs
WHEN OLD.status IS NOT NEW.status
BEGIN
    UPDATE queue_counts
    SET queued = queued - (OLD.status = 'queued'), running = running - (OLD.status = 'running')
    WHERE organization_id = OLD.organization_id AND requires = OLD.requires
      AND OLD.status IN ('queued', 'running');
    INSERT INTO queue_counts (organization_id, requires, queued, running)
    SELECT NEW.organization_id, NEW.requires, NEW.status = 'queued', NEW.status = 'running'
    WHERE NEW.status IN ('queued', 'running')
    ON CONFLICT (organization_id, requires) DO UPDATE
    SET queued = queued + excluded.queued, running = running + excluded.running;
END;

CREATE TRIGGER runs_counted_on_delete AFTER DELETE ON runs
WHEN OLD.status IN ('queued', 'running')
BEGIN
    UPDATE queue_counts
    SET queued = queued - (OLD.status = 'queued'), running = running - (OLD.status = 'running')
    WHERE organization_id = OLD.organization_id AND requires = OLD.requires;
END;

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
