DROP INDEX machines_by_capability;
