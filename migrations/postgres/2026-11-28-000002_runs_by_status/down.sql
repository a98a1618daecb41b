DROP INDEX runs_by_status;
