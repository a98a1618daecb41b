-- Failed sign-ins, counted per client address and per account from one address, so every replica
-- throttles the same guesser (`users::throttle`). The subject is hashed: no email address or IP is
-- kept here in plain text.
CREATE TABLE sign_in_failures (
    subject TEXT PRIMARY KEY NOT NULL,
    failures INTEGER NOT NULL,
    last_failed_at TIMESTAMP NOT NULL
);
CREATE INDEX sign_in_failures_by_age ON sign_in_failures (last_failed_at);
