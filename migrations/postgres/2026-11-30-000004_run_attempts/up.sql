-- Every hand-out of a run to a machine, and how it ended; and the run a retry was made from.
CREATE TABLE run_attempts (
    id BIGSERIAL PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES runs (id),
    machine_id BIGINT NOT NULL REFERENCES machines (id),
    started_at TIMESTAMP NOT NULL,
    ended_at TIMESTAMP,
    outcome TEXT
);
CREATE INDEX run_attempts_by_run ON run_attempts (run_id);
ALTER TABLE runs ADD COLUMN retried_from_run_id BIGINT REFERENCES runs (id);
