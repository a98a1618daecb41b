DROP TRIGGER api_keys_kept_for_runs ON api_keys;
DROP TRIGGER organizations_kept_for_runs ON organizations;
DROP FUNCTION runs_parent_kept();
DROP TRIGGER runs_parents_fixed ON runs;
DROP FUNCTION runs_parents_fixed();
DROP TRIGGER runs_parents_exist ON runs;
DROP FUNCTION runs_parents_exist();
ALTER TABLE runs
    ADD CONSTRAINT runs_organization_id_fkey FOREIGN KEY (organization_id) REFERENCES organizations (id),
    ADD CONSTRAINT runs_api_key_id_fkey FOREIGN KEY (api_key_id) REFERENCES api_keys (id);
