CREATE INDEX audit_events_by_organization ON audit_events (organization_id, created_at);
DROP INDEX audit_events_by_organization_actor;
DROP INDEX audit_events_by_organization_action;
DROP INDEX audit_events_by_organization_id;
