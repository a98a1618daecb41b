DROP INDEX runs_running_by_machine;
