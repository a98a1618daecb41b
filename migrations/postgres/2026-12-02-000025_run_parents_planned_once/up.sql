-- The check that a statement's new runs name organizations and API keys that exist (000024) handed
-- their ids to its queries as arrays, which PostgreSQL planned again for every statement (a plan
-- for the array at hand is cheaper to run, by its estimate, than a plan for any array): 200 µs of
-- every batch of queued runs. The same check, with the same locks taken in the same order, as one
-- query over the new rows has no parameters, so it is planned once per connection (70 µs).
CREATE OR REPLACE FUNCTION runs_parents_exist() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM (SELECT DISTINCT organization_id AS id FROM inserted ORDER BY 1) named
               WHERE NOT EXISTS (SELECT FROM organizations WHERE id = named.id FOR KEY SHARE))
       OR EXISTS (SELECT FROM (SELECT DISTINCT api_key_id AS id FROM inserted
                               WHERE api_key_id IS NOT NULL ORDER BY 1) named
                  WHERE NOT EXISTS (SELECT FROM api_keys WHERE id = named.id FOR KEY SHARE)) THEN
        RAISE EXCEPTION 'a run refers to an organization or API key that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;
