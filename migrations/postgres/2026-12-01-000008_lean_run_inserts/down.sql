DROP TRIGGER runs_counted_on_insert ON runs;
DROP FUNCTION runs_counted_inserted();
CREATE TRIGGER runs_counted_on_insert AFTER INSERT ON runs
FOR EACH ROW EXECUTE FUNCTION runs_counted();
DROP INDEX runs_by_machine;
CREATE INDEX runs_by_machine ON runs (machine_id, created_at);
DROP INDEX runs_by_organization_started;
CREATE INDEX runs_by_organization_started ON runs (organization_id, started_at);
DROP INDEX runs_by_retried_from;
CREATE INDEX runs_by_retried_from ON runs (retried_from_run_id);
DROP INDEX runs_by_status_finished;
CREATE INDEX runs_by_status_finished ON runs (status, finished_at);
