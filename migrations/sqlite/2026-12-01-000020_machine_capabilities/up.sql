-- The machine list narrowed to one capability (`?capability=sap`) reads this table in name order, so a
-- page costs the same whether ten machines or ten thousand have the capability, or none. One row per
-- live machine and capability, kept by the triggers below: no code path that enrolls, renames or
-- removes a machine, or changes what it can do, can forget it.
CREATE TABLE machine_capabilities (
    organization_id BIGINT NOT NULL,
    capability TEXT NOT NULL,
    name TEXT NOT NULL,
    machine_id BIGINT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    PRIMARY KEY (organization_id, capability, name, machine_id)
) WITHOUT ROWID;
CREATE INDEX machine_capabilities_by_machine ON machine_capabilities (machine_id);

INSERT OR IGNORE INTO machine_capabilities (organization_id, capability, name, machine_id)
SELECT machines.organization_id, held.value, machines.name, machines.id
FROM machines, json_each(machines.capabilities) AS held
WHERE machines.removed_at IS NULL;

CREATE TRIGGER machine_capabilities_enrolled AFTER INSERT ON machines FOR EACH ROW
WHEN NEW.removed_at IS NULL
BEGIN
    INSERT OR IGNORE INTO machine_capabilities (organization_id, capability, name, machine_id)
    SELECT NEW.organization_id, held.value, NEW.name, NEW.id FROM json_each(NEW.capabilities) AS held;
END;

CREATE TRIGGER machine_capabilities_changed
AFTER UPDATE OF organization_id, name, capabilities, removed_at ON machines FOR EACH ROW
WHEN OLD.organization_id IS NOT NEW.organization_id OR OLD.name IS NOT NEW.name
    OR OLD.capabilities IS NOT NEW.capabilities OR OLD.removed_at IS NOT NEW.removed_at
BEGIN
    DELETE FROM machine_capabilities WHERE machine_id = OLD.id;
    INSERT OR IGNORE INTO machine_capabilities (organization_id, capability, name, machine_id)
    SELECT NEW.organization_id, held.value, NEW.name, NEW.id FROM json_each(NEW.capabilities) AS held
    WHERE NEW.removed_at IS NULL;
END;
