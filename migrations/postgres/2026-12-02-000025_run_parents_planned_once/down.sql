-- The check as 000024 made it.
CREATE OR REPLACE FUNCTION runs_parents_exist() RETURNS trigger LANGUAGE plpgsql AS $$
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
