-- Who called with each key, per hour: the address, the user agent and the endpoint of successful
-- calls, counted. What a revocation would break is read from here ("1,204 calls from 2 clients in
-- the last 24 h"). A key's distinct callers per hour are capped in memory before they are written,
-- and rows go with the usage hours by retention.
CREATE TABLE api_key_callers (
    api_key_id BIGINT NOT NULL REFERENCES api_keys (id),
    hour_start TIMESTAMP NOT NULL,
    ip_address TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    calls BIGINT NOT NULL,
    PRIMARY KEY (api_key_id, hour_start, ip_address, user_agent, endpoint)
);
CREATE INDEX api_key_callers_by_hour ON api_key_callers (hour_start);
