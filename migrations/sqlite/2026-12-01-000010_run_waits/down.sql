DROP TRIGGER runs_waits_on_start;
DROP TABLE run_waits;
