-- Runs are the table written most: every enqueue inserts one. A foreign key checks each new row on
-- its own (a query per row and per key, locking the parent row), which was half the cost of storing
-- a batch of queued runs. The same rule is kept by one check per statement instead (of the batch's
-- few distinct organizations and keys, without locks). Organizations and API keys are never
-- deleted (keys are revoked and kept), a run never changes organization or key, and ids never
-- change; the triggers below refuse what the foreign keys refused, should it ever be tried.
ALTER TABLE runs
    DROP CONSTRAINT runs_organization_id_fkey,
    DROP CONSTRAINT runs_api_key_id_fkey;

CREATE FUNCTION runs_parents_exist() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM (SELECT DISTINCT organization_id, api_key_id FROM inserted) r
        WHERE NOT EXISTS (SELECT 1 FROM organizations o WHERE o.id = r.organization_id)
           OR (r.api_key_id IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM api_keys k WHERE k.id = r.api_key_id))
    ) THEN
        RAISE EXCEPTION 'a run refers to an organization or API key that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER runs_parents_exist AFTER INSERT ON runs REFERENCING NEW TABLE AS inserted
FOR EACH STATEMENT EXECUTE FUNCTION runs_parents_exist();

-- A run never moves to another organization or key.
CREATE FUNCTION runs_parents_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a run''s organization and API key do not change'
        USING ERRCODE = 'foreign_key_violation';
END;
$$;

CREATE TRIGGER runs_parents_fixed BEFORE UPDATE OF organization_id, api_key_id ON runs
FOR EACH ROW WHEN (OLD.organization_id IS DISTINCT FROM NEW.organization_id
                   OR OLD.api_key_id IS DISTINCT FROM NEW.api_key_id)
EXECUTE FUNCTION runs_parents_fixed();

-- An organization or API key that runs refer to stays, as the foreign keys had it.
CREATE FUNCTION runs_parent_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (TG_TABLE_NAME = 'organizations' AND EXISTS (SELECT 1 FROM runs WHERE organization_id = OLD.id))
       OR (TG_TABLE_NAME = 'api_keys' AND EXISTS (SELECT 1 FROM runs WHERE api_key_id = OLD.id)) THEN
        RAISE EXCEPTION 'runs refer to this row of %', TG_TABLE_NAME
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN OLD;
END;
$$;

CREATE TRIGGER organizations_kept_for_runs BEFORE DELETE ON organizations
FOR EACH ROW EXECUTE FUNCTION runs_parent_kept();
CREATE TRIGGER api_keys_kept_for_runs BEFORE DELETE ON api_keys
FOR EACH ROW EXECUTE FUNCTION runs_parent_kept();
