ALTER TABLE machines DROP COLUMN paused_by_user_id;
ALTER TABLE machines DROP COLUMN paused_at;
ALTER TABLE machines DROP COLUMN driver_started_at;
