-- Avg Wait Time in bounded time: per organization and minute of start, how many runs started and
-- how long they had waited in all, kept by the trigger below in the same transaction as every start
-- (and undone when a start is undone: a run given back to the queue counts once, at its latest
-- start). The mean over the last hour reads at most 61 rows; the queue sampler prunes older ones.
CREATE TABLE run_waits (
    organization_id BIGINT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    minute TIMESTAMP NOT NULL,
    started BIGINT NOT NULL,
    waited_ms BIGINT NOT NULL,
    PRIMARY KEY (organization_id, minute)
);

INSERT INTO run_waits (organization_id, minute, started, waited_ms)
SELECT organization_id, strftime('%Y-%m-%d %H:%M:00', started_at), COUNT(*),
       SUM(CAST(ROUND((julianday(started_at) - julianday(created_at)) * 86400000) AS INTEGER))
FROM runs WHERE started_at >= datetime('now', '-2 hours')
GROUP BY 1, 2;

CREATE TRIGGER runs_waits_on_start AFTER UPDATE OF started_at ON runs
WHEN OLD.started_at IS NOT NEW.started_at
BEGIN
    UPDATE run_waits
    SET started = started - 1,
        waited_ms = waited_ms - CAST(ROUND((julianday(OLD.started_at) - julianday(OLD.created_at)) * 86400000) AS INTEGER)
    WHERE OLD.started_at IS NOT NULL AND organization_id = OLD.organization_id
      AND minute = strftime('%Y-%m-%d %H:%M:00', OLD.started_at);
    INSERT INTO run_waits (organization_id, minute, started, waited_ms)
    SELECT NEW.organization_id, strftime('%Y-%m-%d %H:%M:00', NEW.started_at), 1,
           CAST(ROUND((julianday(NEW.started_at) - julianday(NEW.created_at)) * 86400000) AS INTEGER)
    WHERE NEW.started_at IS NOT NULL
    ON CONFLICT (organization_id, minute) DO UPDATE
    SET started = started + 1, waited_ms = waited_ms + excluded.waited_ms;
END;
