DROP TABLE queue_samples;
DROP INDEX runs_queued_by_age;
DROP TRIGGER runs_counted_on_delete;
DROP TRIGGER runs_counted_on_update;
DROP TRIGGER runs_counted_on_insert;
DROP TABLE queue_counts;
