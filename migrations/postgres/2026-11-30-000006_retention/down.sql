DROP INDEX api_key_usage_by_hour;
DROP INDEX runs_by_retried_from;
DROP INDEX runs_by_status_finished;
