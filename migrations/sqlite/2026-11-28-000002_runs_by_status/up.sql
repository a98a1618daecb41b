-- Running and queued runs counted across organizations (metrics, leases).
CREATE INDEX runs_by_status ON runs (status, organization_id);
