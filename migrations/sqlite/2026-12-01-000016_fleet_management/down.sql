DROP TABLE invites;
DROP TABLE api_key_rate_windows;
ALTER TABLE api_key_usage DROP COLUMN limited_count;
ALTER TABLE api_keys DROP COLUMN rate_limit_per_minute;
DROP TRIGGER machines_freed;
DROP INDEX machines_idle_by_priority;
ALTER TABLE machines DROP COLUMN idle_since;
ALTER TABLE machines DROP COLUMN priority;
ALTER TABLE users ADD COLUMN role_checked TEXT NOT NULL DEFAULT 'viewer'
    CHECK (role_checked IN ('admin', 'viewer'));
UPDATE users SET role_checked = CASE role WHEN 'admin' THEN 'admin' ELSE 'viewer' END;
ALTER TABLE users DROP COLUMN role;
ALTER TABLE users RENAME COLUMN role_checked TO role;
