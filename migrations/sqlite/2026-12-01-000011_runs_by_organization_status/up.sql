-- One index for "this organization's runs in this status, oldest or newest first": the oldest queued
-- run (Queue Status), the jobs list filtered by status, newest first. It replaces two that each did
-- half of that (status then organization, unordered; queued runs by age), so a queued run writes one
-- index entry fewer, and a query planner working from statistics taken before a burst of enqueues
-- finds the order it needs in the index instead of sorting every queued run.
DROP INDEX runs_by_status;
DROP INDEX runs_queued_by_age;
CREATE INDEX runs_by_organization_status ON runs (organization_id, status, created_at);
