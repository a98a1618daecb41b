-- A new run is queued: it has not started, finished, been taken by a machine, nor is it a retry. Indexes
-- on those columns keep only the rows that have them, so queuing a run writes four fewer index
-- entries (a quarter of its cost). Every query on these columns names a value of the column, which
-- implies IS NOT NULL, so both backends still use them (and the foreign key check of
-- retried_from_run_id likewise).
DROP INDEX runs_by_status_finished;
CREATE INDEX runs_by_status_finished ON runs (status, finished_at) WHERE finished_at IS NOT NULL;
DROP INDEX runs_by_retried_from;
CREATE INDEX runs_by_retried_from ON runs (retried_from_run_id) WHERE retried_from_run_id IS NOT NULL;
DROP INDEX runs_by_organization_started;
CREATE INDEX runs_by_organization_started ON runs (organization_id, started_at) WHERE started_at IS NOT NULL;
DROP INDEX runs_by_machine;
CREATE INDEX runs_by_machine ON runs (machine_id, created_at) WHERE machine_id IS NOT NULL;
