-- Retention finds finished runs past their age a bounded batch at a time: the range of old finish times
-- within each finished status, so a batch reads what it deletes and no more.
CREATE INDEX runs_by_status_finished ON runs (status, finished_at);
-- Deleting a run clears the link of its retries and checks this foreign key; both look runs up by it.
CREATE INDEX runs_by_retried_from ON runs (retried_from_run_id);
-- Usage hours are pruned by age across all keys.
CREATE INDEX api_key_usage_by_hour ON api_key_usage (hour_start);
