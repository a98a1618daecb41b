-- The whole data model of Granite API Management. Times are UTC.

CREATE TABLE organizations (
    id BIGSERIAL PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    organization_id BIGINT NOT NULL REFERENCES organizations (id),
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    created_at TIMESTAMP NOT NULL,
    last_sign_in_at TIMESTAMP
);
CREATE INDEX users_by_organization ON users (organization_id);

CREATE TABLE api_keys (
    id BIGSERIAL PRIMARY KEY,
    organization_id BIGINT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    hint TEXT NOT NULL,
    created_by_user_id BIGINT REFERENCES users (id),
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP,
    replaced_by_key_id BIGINT REFERENCES api_keys (id),
    revoked_at TIMESTAMP,
    revoked_by_user_id BIGINT REFERENCES users (id),
    last_used_at TIMESTAMP,
    last_used_ip TEXT,
    last_used_user_agent TEXT
);
CREATE INDEX api_keys_by_organization ON api_keys (organization_id, created_at);

CREATE TABLE api_key_usage (
    api_key_id BIGINT NOT NULL REFERENCES api_keys (id),
    hour_start TIMESTAMP NOT NULL,
    success_count BIGINT NOT NULL DEFAULT 0,
    rejected_count BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (api_key_id, hour_start)
);

CREATE TABLE enrollment_tokens (
    id BIGSERIAL PRIMARY KEY,
    organization_id BIGINT NOT NULL REFERENCES organizations (id),
    description TEXT NOT NULL DEFAULT '',
    secret_hash TEXT NOT NULL UNIQUE,
    hint TEXT NOT NULL,
    created_by_user_id BIGINT REFERENCES users (id),
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP,
    machine_id BIGINT,
    revoked_at TIMESTAMP,
    revoked_by_user_id BIGINT REFERENCES users (id)
);
CREATE INDEX enrollment_tokens_by_organization ON enrollment_tokens (organization_id, created_at);

CREATE TABLE machines (
    id BIGSERIAL PRIMARY KEY,
    organization_id BIGINT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    os_version TEXT NOT NULL DEFAULT '',
    ip_address TEXT NOT NULL DEFAULT '',
    capabilities TEXT NOT NULL DEFAULT '[]',
    driver_version TEXT NOT NULL DEFAULT '',
    credential_hash TEXT NOT NULL UNIQUE,
    enrollment_token_id BIGINT REFERENCES enrollment_tokens (id),
    enrolled_at TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP,
    reported_status TEXT NOT NULL DEFAULT 'idle',
    current_run_id BIGINT,
    removed_at TIMESTAMP,
    removed_by_user_id BIGINT REFERENCES users (id)
);
CREATE INDEX machines_by_organization_last_seen ON machines (organization_id, last_seen_at);
CREATE INDEX machines_by_organization_name ON machines (organization_id, name);

-- Runs are the jobs of the public API ("agent runs"): queued by an API key, claimed by one machine.
CREATE TABLE runs (
    id BIGSERIAL PRIMARY KEY,
    public_id TEXT NOT NULL UNIQUE,
    organization_id BIGINT NOT NULL REFERENCES organizations (id),
    api_key_id BIGINT REFERENCES api_keys (id),
    endpoint TEXT NOT NULL,
    parameters TEXT NOT NULL DEFAULT '{}',
    requires TEXT NOT NULL DEFAULT '[]',
    priority INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    result TEXT,
    error_type TEXT,
    error_message TEXT,
    machine_id BIGINT REFERENCES machines (id),
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    cancel_requested_at TIMESTAMP
);
-- The claim path: the oldest highest-priority queued run of one organization.
CREATE INDEX runs_queued ON runs (organization_id, priority DESC, created_at, id) WHERE status = 'queued';
-- Queue status (waits over the last hour) and listings.
CREATE INDEX runs_by_organization_started ON runs (organization_id, started_at);
CREATE INDEX runs_by_organization_created ON runs (organization_id, created_at);
CREATE INDEX runs_by_machine ON runs (machine_id, created_at);

CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    organization_id BIGINT REFERENCES organizations (id),
    actor_user_id BIGINT REFERENCES users (id),
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target_type TEXT NOT NULL DEFAULT '',
    target_id TEXT,
    source_ip TEXT,
    details TEXT NOT NULL DEFAULT '{}',
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX audit_events_by_organization ON audit_events (organization_id, created_at);

-- Server-wide values shared by every replica (the session signing key, the one-time setup code's hash).
CREATE TABLE server_settings (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
