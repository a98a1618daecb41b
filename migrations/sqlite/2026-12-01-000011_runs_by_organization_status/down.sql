DROP INDEX runs_by_organization_status;
CREATE INDEX runs_queued_by_age ON runs (organization_id, created_at) WHERE status = 'queued';
CREATE INDEX runs_by_status ON runs (status, organization_id);
