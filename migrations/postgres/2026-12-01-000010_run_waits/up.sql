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
SELECT organization_id, date_trunc('minute', started_at), COUNT(*),
       SUM(ROUND(EXTRACT(EPOCH FROM started_at - created_at) * 1000))::bigint
FROM runs WHERE started_at >= (now() AT TIME ZONE 'UTC') - interval '2 hours'
GROUP BY 1, 2;

CREATE FUNCTION runs_waits_on_start() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE TRIGGER runs_waits_on_start AFTER UPDATE OF started_at ON runs FOR EACH ROW
WHEN (OLD.started_at IS DISTINCT FROM NEW.started_at)
EXECUTE FUNCTION runs_waits_on_start();
