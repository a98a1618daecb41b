-- Every machine change a trigger announces (`replicas::Topic::Machines`) also advances this sequence,
-- and an enrolled machine is announced too. Each replica keeps a census of its fleet
-- (`machines::fleet`) and takes a new one whenever the sequence has moved: one read of a sequence
-- rather than a count of every machine per dashboard refresh, and a change made on any replica is
-- counted at once (a sequence never blocks concurrent writers, unlike a counter row).
CREATE SEQUENCE machine_changes;

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

CREATE TRIGGER machines_enrolled AFTER INSERT ON machines FOR EACH ROW
EXECUTE FUNCTION machine_changed();
