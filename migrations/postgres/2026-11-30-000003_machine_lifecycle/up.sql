-- What the driver announced when it last started, and whether an admin paused (drained) the machine.
ALTER TABLE machines ADD COLUMN driver_started_at TIMESTAMP;
ALTER TABLE machines ADD COLUMN paused_at TIMESTAMP;
ALTER TABLE machines ADD COLUMN paused_by_user_id BIGINT REFERENCES users (id);
