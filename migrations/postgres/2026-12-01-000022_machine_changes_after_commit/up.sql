-- A machine's change is announced after the transaction that made it, not from inside it. A NOTIFY
-- makes its transaction take PostgreSQL's lock that keeps notifications in commit order, and holds it
-- through the commit's flush to disk: every claim and report (each changes its machine) flushed on
-- its own, one after another, where concurrent commits otherwise share one flush.
--
-- The triggers now collect the machine ids in a setting of the connection's session. A setting
-- changed in a transaction that rolls back (or a savepoint rolled back) is restored, so only
-- committed changes stay collected. Granite calls `announce_machine_changes()` as each connection
-- comes back to its pool (`db::machine_changes`): a transaction of its own that writes nothing, so it
-- holds the lock for no flush. Channel and payload as before (`replicas::Topic::Machines`): a
-- machine id, or `*` for "many machines changed" (every replica forgets them all).
CREATE OR REPLACE FUNCTION machine_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text := COALESCE(current_setting('granite.machines_changed', true), '');
    machine text;
BEGIN
    PERFORM nextval('machine_changes');
    IF TG_TABLE_NAME = 'runs' THEN
        machine := COALESCE(OLD.machine_id, NEW.machine_id)::text;
    ELSE
        machine := COALESCE(OLD.id, NEW.id)::text;
    END IF;
    IF changed = '*' OR position(',' || machine || ',' IN ',' || changed || ',') > 0 THEN
        RETURN NULL;
    ELSIF changed = '' THEN
        changed := machine;
    ELSIF length(changed) > 2000 THEN
        changed := '*';
    ELSE
        changed := changed || ',' || machine;
    END IF;
    PERFORM set_config('granite.machines_changed', changed, false);
    RETURN NULL;
END;
$$;

CREATE FUNCTION announce_machine_changes() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    changed text := COALESCE(current_setting('granite.machines_changed', true), '');
    machine text;
BEGIN
    IF changed = '' THEN
        RETURN;
    END IF;
    PERFORM set_config('granite.machines_changed', '', false);
    FOREACH machine IN ARRAY string_to_array(changed, ',') LOOP
        PERFORM pg_notify('granite_machines', current_schema() || '/' || machine);
    END LOOP;
END;
$$;
