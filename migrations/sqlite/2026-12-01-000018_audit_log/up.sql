-- The audit log is read a page at a time, newest first, by keyset (`id < before`): one index per way
-- it is filtered, each ending in `id` so it serves the order and the cursor without sorting.
CREATE INDEX audit_events_by_organization_id ON audit_events (organization_id, id);
CREATE INDEX audit_events_by_organization_action ON audit_events (organization_id, action, id);
CREATE INDEX audit_events_by_organization_actor ON audit_events (organization_id, actor, id);
-- Replaced by the first: events are read in id order, never by created_at.
DROP INDEX audit_events_by_organization;
