CREATE INDEX runs_by_organization_created ON runs (organization_id, created_at);
