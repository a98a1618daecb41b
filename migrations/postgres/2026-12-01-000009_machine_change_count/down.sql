DROP TRIGGER machines_enrolled ON machines;
CREATE OR REPLACE FUNCTION machine_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'runs' THEN
        PERFORM pg_notify('granite_machines', current_schema() || '/' || COALESCE(OLD.machine_id, NEW.machine_id));
    ELSE
        PERFORM pg_notify('granite_machines', current_schema() || '/' || OLD.id);
    END IF;
    RETURN NULL;
END;
$$;
DROP SEQUENCE machine_changes;
