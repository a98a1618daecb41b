//! Which machines a write changed, for the memory a heartbeat answers from (`machines::memory`),
//! announced once the transaction that changed them has ended: a change is never announced before it
//! is visible, and one rolled back is not announced.
//!
//! Triggers collect the ids per connection, so no code path that changes a machine can forget to, and
//! the pool hands them on as the connection comes back ([`super::ConnectionManager`]):
//! - PostgreSQL: the triggers (migrations `machine_changes`, `machine_changes_after_commit`) keep them
//!   in a setting of the session, which a rollback restores; [`announce`] sends them to every replica
//!   (`replicas::Topic::Machines`). Not from inside the changing transaction: a `NOTIFY` there would
//!   hold PostgreSQL's notification lock through the commit's flush, and every claim and report would
//!   flush alone, one after another.
//! - SQLite: one server, so each pooled connection carries temporary triggers that call back into
//!   this process ([`watch`]), and [`MachineChanges::hand_on`] gives the ids to the listener. The
//!   triggers are `TEMP`: they exist only on Granite's own connections, so other tools that open the
//!   file (the `sqlite3` shell, a backup) are unaffected.
//!
//! A server killed between a commit and its connection's return announces nothing for it; every
//! replica's memory trusts a machine for a limited time anyway (`machines::memory`).

use std::sync::{Arc, Mutex, OnceLock};

use diesel::connection::SimpleConnection;
use diesel::expression::functions::declare_sql_function;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

#[declare_sql_function]
extern "SQL" {
    fn granite_machine_changed(machine_id: BigInt) -> BigInt;
}

/// The same conditions as the PostgreSQL triggers: a machine enrolled or deleted, or a change to what a
/// heartbeat's answer and the fleet's counts depend on.
const TRIGGERS: &str = "
CREATE TEMP TRIGGER machines_changed AFTER UPDATE ON machines FOR EACH ROW
WHEN OLD.current_run_id IS NOT NEW.current_run_id
  OR OLD.paused_at IS NOT NEW.paused_at
  OR OLD.removed_at IS NOT NEW.removed_at
  OR OLD.reported_status IS NOT NEW.reported_status
  OR OLD.credential_hash IS NOT NEW.credential_hash
BEGIN SELECT granite_machine_changed(OLD.id); END;
CREATE TEMP TRIGGER machines_deleted AFTER DELETE ON machines FOR EACH ROW
BEGIN SELECT granite_machine_changed(OLD.id); END;
CREATE TEMP TRIGGER machines_enrolled AFTER INSERT ON machines FOR EACH ROW
BEGIN SELECT granite_machine_changed(NEW.id); END;
CREATE TEMP TRIGGER runs_of_machine_changed AFTER UPDATE OF status ON runs FOR EACH ROW
WHEN OLD.status IS NOT NEW.status AND COALESCE(OLD.machine_id, NEW.machine_id) IS NOT NULL
BEGIN SELECT granite_machine_changed(COALESCE(OLD.machine_id, NEW.machine_id)); END;
";

/// Announces to every replica the machines this session's committed transactions changed (none: one
/// round trip that does nothing). Call with no transaction open.
pub fn announce(conn: &mut diesel::PgConnection) -> QueryResult<()> {
    crate::db::statement::statement("SELECT announce_machine_changes()").execute(conn)?;
    Ok(())
}

/// SQLite: machines changed by writes on one connection, not yet handed on.
pub type Pending = Arc<Mutex<Vec<i64>>>;

/// Installs the function and triggers on a new connection (after migrations created the tables).
pub fn watch(conn: &mut diesel::SqliteConnection) -> QueryResult<Pending> {
    let pending = Pending::default();
    let collected = pending.clone();
    granite_machine_changed_utils::register_nondeterministic_impl(conn, move |id: i64| {
        collected.lock().unwrap_or_else(|e| e.into_inner()).push(id);
        id
    })?;
    conn.batch_execute(TRIGGERS)?;
    Ok(pending)
}

type Listener = Box<dyn Fn(Vec<i64>) + Send + Sync>;

/// Where the pool hands the changed machines (set once, by the application).
#[derive(Default)]
pub struct MachineChanges(OnceLock<Listener>);

impl std::fmt::Debug for MachineChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineChanges")
            .field("listening", &self.0.get().is_some())
            .finish()
    }
}

impl MachineChanges {
    pub fn listen(&self, listener: impl Fn(Vec<i64>) + Send + Sync + 'static) {
        if self.0.set(Box::new(listener)).is_err() {
            panic!("one listener for machine changes per pool");
        }
    }

    /// Hands on what `pending` collected.
    pub fn hand_on(&self, pending: &Pending) {
        let ids = std::mem::take(&mut *pending.lock().unwrap_or_else(|e| e.into_inner()));
        if let (false, Some(listener)) = (ids.is_empty(), self.0.get()) {
            listener(ids);
        }
    }
}
