DROP FUNCTION announce_machine_changes();
CREATE OR REPLACE FUNCTION machine_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('machine_changes');
    IF TG_TABLE_NAME = 'runs' THEN
        PERFORM pg_notify('granite_machines', current_schema() || '/' || COALESCE(OLD.machine_id, NEW.machine_id));
    ELSE
        PERFORM pg_notify('granite_machines', current_schema() || '/' || COALESCE(OLD.id, NEW.id));
    END IF;
    RETURN NULL;
END;
$$;
