-- Members, dispatch by machine priority, per-key rate limits, invites.

-- A third role between admin and viewer. SQLite cannot change a CHECK in place: the column is
-- replaced by one with the new rule (its own CHECK goes with it).
ALTER TABLE users ADD COLUMN role_checked TEXT NOT NULL DEFAULT 'viewer'
    CHECK (role_checked IN ('admin', 'member', 'viewer'));
UPDATE users SET role_checked = role;
ALTER TABLE users DROP COLUMN role;
ALTER TABLE users RENAME COLUMN role_checked TO role;

-- Dispatch: among idle machines that can take a run, the highest priority first, then the one idle
-- the longest. idle_since is set whenever a machine stops holding a run, by the trigger below, so no
-- code path that frees a machine can forget it.
ALTER TABLE machines ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE machines ADD COLUMN idle_since TIMESTAMP;
UPDATE machines SET idle_since = COALESCE(last_seen_at, enrolled_at);
CREATE INDEX machines_idle_by_priority ON machines (organization_id, priority DESC, idle_since, id)
    WHERE removed_at IS NULL AND paused_at IS NULL AND current_run_id IS NULL;

CREATE TRIGGER machines_freed AFTER UPDATE OF current_run_id ON machines FOR EACH ROW
WHEN OLD.current_run_id IS NOT NULL AND NEW.current_run_id IS NULL
BEGIN
    UPDATE machines SET idle_since = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE id = NEW.id;
END;

-- Per-key rate limits: an override per key (NULL: the server's default), refused calls counted apart,
-- and the calls of each key per minute.
ALTER TABLE api_keys ADD COLUMN rate_limit_per_minute BIGINT;
ALTER TABLE api_key_usage ADD COLUMN limited_count BIGINT NOT NULL DEFAULT 0;
CREATE TABLE api_key_rate_windows (
    api_key_id BIGINT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    window_start BIGINT NOT NULL,
    used BIGINT NOT NULL,
    PRIMARY KEY (api_key_id, window_start)
);

-- One-time invite links: the invitee sets a password and joins with the role the admin chose.
CREATE TABLE invites (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id BIGINT NOT NULL REFERENCES organizations (id),
    email TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
    secret_hash TEXT NOT NULL UNIQUE,
    created_by_user_id BIGINT REFERENCES users (id) ON DELETE SET NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP,
    user_id BIGINT REFERENCES users (id) ON DELETE SET NULL,
    revoked_at TIMESTAMP
);
CREATE INDEX invites_by_organization ON invites (organization_id, created_at);
