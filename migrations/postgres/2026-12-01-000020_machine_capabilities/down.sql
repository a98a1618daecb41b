CREATE INDEX machines_by_capability ON machines USING GIN ((capabilities::jsonb) jsonb_path_ops)
    WHERE removed_at IS NULL;
DROP TRIGGER machine_capabilities_changed ON machines;
DROP TRIGGER machine_capabilities_enrolled ON machines;
DROP FUNCTION machine_capabilities_kept();
DROP TABLE machine_capabilities;
