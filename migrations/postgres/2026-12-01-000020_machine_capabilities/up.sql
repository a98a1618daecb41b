-- The machine list narrowed to one capability (`?capability=sap`) reads this table in name order, so a
-- page costs the same whether ten machines or ten thousand have the capability, or none (the GIN index
-- it replaces found the machines, but every one of them had to be read and sorted). One row per live
-- machine and capability, kept by the trigger below: no code path that enrolls, renames or removes a
-- machine, or changes what it can do, can forget it.
CREATE TABLE machine_capabilities (
    organization_id BIGINT NOT NULL,
    capability TEXT NOT NULL,
    name TEXT NOT NULL,
    machine_id BIGINT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    PRIMARY KEY (organization_id, capability, name, machine_id)
);
CREATE INDEX machine_capabilities_by_machine ON machine_capabilities (machine_id);

INSERT INTO machine_capabilities (organization_id, capability, name, machine_id)
SELECT DISTINCT machines.organization_id, held, machines.name, machines.id
FROM machines, jsonb_array_elements_text(machines.capabilities::jsonb) AS held
WHERE machines.removed_at IS NULL;

CREATE FUNCTION machine_capabilities_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM machine_capabilities WHERE machine_id = OLD.id;
    END IF;
    IF NEW.removed_at IS NULL THEN
        INSERT INTO machine_capabilities (organization_id, capability, name, machine_id)
        SELECT DISTINCT NEW.organization_id, held, NEW.name, NEW.id
        FROM jsonb_array_elements_text(NEW.capabilities::jsonb) AS held
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER machine_capabilities_enrolled AFTER INSERT ON machines FOR EACH ROW
EXECUTE FUNCTION machine_capabilities_kept();

CREATE TRIGGER machine_capabilities_changed
AFTER UPDATE OF organization_id, name, capabilities, removed_at ON machines FOR EACH ROW
WHEN (OLD.organization_id IS DISTINCT FROM NEW.organization_id OR OLD.name IS DISTINCT FROM NEW.name
    OR OLD.capabilities IS DISTINCT FROM NEW.capabilities
    OR OLD.removed_at IS DISTINCT FROM NEW.removed_at)
EXECUTE FUNCTION machine_capabilities_kept();

DROP INDEX machines_by_capability;
