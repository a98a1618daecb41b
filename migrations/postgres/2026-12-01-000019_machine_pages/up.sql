-- The machine list filtered by a capability (`?capability=sap`) asks jsonb containment of the
-- capabilities array; this index answers it without reading every machine of a large fleet. (SQLite
-- has no such index: it filters the organization's machines with json_each.)
CREATE INDEX machines_by_capability ON machines USING GIN ((capabilities::jsonb) jsonb_path_ops)
    WHERE removed_at IS NULL;
