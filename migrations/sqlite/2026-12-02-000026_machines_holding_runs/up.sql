-- The lease keeper's sweep (every replica, every 2 seconds) also looks for machines still marked
-- busy with a run after going quiet. Without an index on that mark it read every machine: 2.8 ms
-- for an idle fleet of 10,000 on PostgreSQL, on every replica, forever. Only machines holding a run
-- are in this index, so the sweep reads as many entries as machines are busy.
CREATE INDEX machines_holding_runs ON machines (current_run_id) WHERE current_run_id IS NOT NULL;
