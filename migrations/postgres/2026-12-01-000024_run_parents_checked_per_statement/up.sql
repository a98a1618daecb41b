-- Runs are the table written most: every enqueue inserts one. A foreign key checks each new row on
-- its own (a query per row and per key), which was half the cost of storing a batch of queued runs.
-- The same rule is kept by one check per statement instead, of the batch's few distinct
-- organizations and keys, which it locks as a foreign key would (`FOR KEY SHARE`: a delete running
-- at the same time waits for the insert, then sees its runs). Organizations and API keys are never
-- deleted (keys are revoked and kept) and their ids never change; the triggers below refuse that
-- while runs refer to them, as the foreign keys did. A run never moves to another organization or
-- key at all.
ALTER TABLE runs
    DROP CONSTRAINT runs_organization_id_fkey,
    DROP CONSTRAINT runs_api_key_id_fkey;

CREATE FUNCTION runs_parents_exist() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    organizations_named BIGINT[];
    keys_named BIGINT[];
BEGIN
    SELECT array_agg(DISTINCT organization_id), array_agg(DISTINCT api_key_id) FILTER (WHERE api_key_id IS NOT NULL)
    INTO organizations_named, keys_named
    FROM inserted;
    IF (SELECT count(*) FROM (SELECT 1 FROM organizations WHERE id = ANY (organizations_named)
                              ORDER BY id FOR KEY SHARE) o)
           < coalesce(cardinality(organizations_named), 0)
       OR (SELECT count(*) FROM (SELECT 1 FROM api_keys WHERE id = ANY (keys_named)
                                 ORDER BY id FOR KEY SHARE) k)
           < coalesce(cardinality(keys_named), 0) THEN
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

-- An organization or API key that runs refer to stays, id and all, as the foreign keys had it.
CREATE FUNCTION runs_parent_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (TG_TABLE_NAME = 'organizations' AND EXISTS (SELECT 1 FROM runs WHERE organization_id = OLD.id))
       OR (TG_TABLE_NAME = 'api_keys' AND EXISTS (SELECT 1 FROM runs WHERE api_key_id = OLD.id)) THEN
        RAISE EXCEPTION 'runs refer to this row of %', TG_TABLE_NAME
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        RETURN NEW;
    END IF;
    RETURN OLD;
END;
$$;

CREATE TRIGGER organizations_kept_for_runs BEFORE DELETE ON organizations
FOR EACH ROW EXECUTE FUNCTION runs_parent_kept();
CREATE TRIGGER organizations_id_kept_for_runs BEFORE UPDATE OF id ON organizations
FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION runs_parent_kept();
CREATE TRIGGER api_keys_kept_for_runs BEFORE DELETE ON api_keys
FOR EACH ROW EXECUTE FUNCTION runs_parent_kept();
CREATE TRIGGER api_keys_id_kept_for_runs BEFORE UPDATE OF id ON api_keys
FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION runs_parent_kept();
