DROP TABLE queue_samples;
DROP INDEX runs_queued_by_age;
DROP TRIGGER runs_counted_on_delete ON runs;
DROP TRIGGER runs_counted_on_update ON runs;
DROP TRIGGER runs_counted_on_insert ON runs;
DROP FUNCTION runs_counted();
DROP TABLE queue_counts;
