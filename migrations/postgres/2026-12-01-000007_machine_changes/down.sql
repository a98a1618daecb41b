DROP TRIGGER runs_of_machine_changed ON runs;
DROP TRIGGER machines_deleted ON machines;
DROP TRIGGER machines_changed ON machines;
DROP FUNCTION machine_changed();
