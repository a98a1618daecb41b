-- The jobs list of every status reads runs_by_organization_status (organization, status, age):
-- one index fewer for every new run to write.
DROP INDEX runs_by_organization_created;
