-- The runs running now, by machine: the lease keeper asks every 2 seconds which machines went quiet
-- while holding one. Through the index of every run a machine ever ran (`runs_by_machine`) that read
-- grew with the history (a million finished runs: a million index entries every 2 seconds); this one
-- holds only the runs running now, at most one per machine.
CREATE INDEX runs_running_by_machine ON runs (machine_id) WHERE status = 'running';
