DROP TRIGGER runs_waits_on_start ON runs;
DROP FUNCTION runs_waits_on_start();
DROP TABLE run_waits;
