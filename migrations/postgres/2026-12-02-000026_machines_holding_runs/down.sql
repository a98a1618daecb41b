DROP INDEX machines_holding_runs;
