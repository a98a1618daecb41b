-- Members, dispatch by machine priority, per-key rate limits, invites.

-- A third role between admin and viewer.
ALTER TABLE users DROP CONSTRAINT users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check CHECK (role IN ('admin', 'member', 'viewer'));

-- Dispatch: among idle machines that can take a run, the highest priority first, then the one idle
-- the longest. idle_since is set whenever a machine stops holding a run, by the trigger below, so no
-- code path that frees a machine can forget it.
ALTER TABLE machines ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE machines ADD COLUMN idle_since TIMESTAMP;
UPDATE machines SET idle_since = COALESCE(last_seen_at, enrolled_at);
CREATE INDEX machines_idle_by_priority ON machines (organization_id, priority DESC, idle_since, id)
    WHERE removed_at IS NULL AND paused_at IS NULL AND current_run_id IS NULL;

CREATE FUNCTION machine_freed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.idle_since := clock_timestamp() AT TIME ZONE 'UTC';
    RETURN NEW;
END;
$$;

CREATE TRIGGER machines_freed BEFORE UPDATE OF current_run_id ON machines FOR EACH ROW
WHEN (OLD.current_run_id IS NOT NULL AND NEW.current_run_id IS NULL)
EXECUTE FUNCTION machine_freed();

-- Per-key rate limits: an override per key (NULL: the server's default), refused calls counted apart,
-- and the calls of each key per minute, shared by every replica.
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
    id BIGSERIAL PRIMARY KEY,
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

