-- Every replica remembers what a heartbeat answers from (a machine's run, its status, paused,
-- removed, reported status) and forgets a machine when it hears that one of these changed. The
-- message is sent here, by triggers, so no code path that changes a machine can forget to; NOTIFY
-- is delivered when the transaction commits, and not at all if it rolls back. Channel and payload
-- match `replicas::Topic::Machines` ("schema/machine id").
CREATE FUNCTION machine_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'runs' THEN
        PERFORM pg_notify('granite_machines', current_schema() || '/' || COALESCE(OLD.machine_id, NEW.machine_id));
    ELSE
        PERFORM pg_notify('granite_machines', current_schema() || '/' || OLD.id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER machines_changed AFTER UPDATE ON machines FOR EACH ROW
WHEN (OLD.current_run_id IS DISTINCT FROM NEW.current_run_id
   OR OLD.paused_at IS DISTINCT FROM NEW.paused_at
   OR OLD.removed_at IS DISTINCT FROM NEW.removed_at
   OR OLD.reported_status IS DISTINCT FROM NEW.reported_status
   OR OLD.credential_hash IS DISTINCT FROM NEW.credential_hash)
EXECUTE FUNCTION machine_changed();

CREATE TRIGGER machines_deleted AFTER DELETE ON machines FOR EACH ROW
EXECUTE FUNCTION machine_changed();

CREATE TRIGGER runs_of_machine_changed AFTER UPDATE OF status ON runs FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status AND COALESCE(OLD.machine_id, NEW.machine_id) IS NOT NULL)
EXECUTE FUNCTION machine_changed();
