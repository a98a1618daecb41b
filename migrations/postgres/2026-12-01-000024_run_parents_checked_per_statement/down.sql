DROP TRIGGER api_keys_id_kept_for_runs ON api_keys;
DROP TRIGGER api_keys_kept_for_runs ON api_keys;
DROP TRIGGER organizations_id_kept_for_runs ON organizations;
DROP TRIGGER organizations_kept_for_runs ON organizations;
DROP FUNCTION runs_parent_kept();
DROP TRIGGER runs_parents_fixed ON runs;
DROP FUNCTION runs_parents_fixed();
DROP TRIGGER runs_parents_exist ON runs;
DROP FUNCTION runs_parents_exist();
-- Added without checking every run while writes wait, then checked.
ALTER TABLE runs
    ADD CONSTRAINT runs_organization_id_fkey FOREIGN KEY (organization_id) REFERENCES organizations (id) NOT VALID,
    ADD CONSTRAINT runs_api_key_id_fkey FOREIGN KEY (api_key_id) REFERENCES api_keys (id) NOT VALID;
ALTER TABLE runs VALIDATE CONSTRAINT runs_organization_id_fkey;
ALTER TABLE runs VALIDATE CONSTRAINT runs_api_key_id_fkey;
