ALTER TABLE runs DROP COLUMN retried_from_run_id;
DROP TABLE run_attempts;
