//! Whether the database can serve this build: a read, a write, and the schema this build expects.
//! `/healthz` asks ([`crate::ops::health`]); a process that is merely alive answers `/livez`.

use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

use super::statement::statement;
use super::{DbConnection, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};

/// One check and what it found: `Err` says what is wrong, in words for an operator.
pub struct Check {
    pub name: &'static str,
    pub outcome: Result<(), String>,
}

/// Every check, in order; each runs even if one before it failed.
pub fn check(conn: &mut DbConnection) -> Vec<Check> {
    vec![
        Check {
            name: "read",
            outcome: read(conn),
        },
        Check {
            name: "write",
            outcome: write(conn),
        },
        Check {
            name: "schema",
            outcome: schema(conn),
        },
    ]
}

fn read(conn: &mut DbConnection) -> Result<(), String> {
    conn.batch_execute("SELECT 1")
        .map_err(|e| format!("the database does not answer: {e}"))
}

/// How long the write check waits for SQLite's write lock.
const WRITE_WAIT_MS: u32 = 1000;

fn write(conn: &mut DbConnection) -> Result<(), String> {
    match conn {
        // Take the write lock and let it go at once; give up soon if another process holds it.
        DbConnection::Sqlite(sqlite) => {
            sqlite
                .batch_execute(&format!("PRAGMA busy_timeout = {WRITE_WAIT_MS}"))
                .map_err(|e| e.to_string())?;
            let locked = sqlite.batch_execute("BEGIN IMMEDIATE; ROLLBACK;");
            let restored =
                sqlite.batch_execute(&format!("PRAGMA busy_timeout = {}", super::BUSY_TIMEOUT_MS));
            if locked.is_err() {
                let _ = sqlite.batch_execute("ROLLBACK");
            }
            restored.map_err(|e| e.to_string())?;
            locked.map_err(|e| format!("cannot take the write lock within {WRITE_WAIT_MS} ms: {e}"))
        }
        // A standby, or a session made read-only, cannot take writes.
        DbConnection::Postgres(pg) => {
            #[derive(QueryableByName)]
            struct Writable {
                #[diesel(sql_type = Bool)]
                writable: bool,
            }
            let found: Writable = statement(
                "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off' AS writable",
            )
            .get_result(pg)
            .map_err(|e| e.to_string())?;
            if found.writable {
                Ok(())
            } else {
                Err("the database is read-only (a standby, or read-only transactions)".into())
            }
        }
    }
}

/// Every migration this build carries has been applied (read from diesel's own table; nothing is
/// created or changed here).
fn schema(conn: &mut DbConnection) -> Result<(), String> {
    #[derive(QueryableByName)]
    struct Applied {
        #[diesel(sql_type = Text)]
        version: String,
    }
    fn versions<DB: diesel::backend::Backend>(
        source: &impl MigrationSource<DB>,
    ) -> Result<Vec<String>, String> {
        Ok(source
            .migrations()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|m| m.name().version().to_string())
            .collect())
    }
    let sql = statement("SELECT version FROM __diesel_schema_migrations");
    let (expected, applied) = match conn {
        DbConnection::Sqlite(sqlite) => (
            versions::<diesel::sqlite::Sqlite>(&SQLITE_MIGRATIONS)?,
            sql.load::<Applied>(sqlite),
        ),
        DbConnection::Postgres(pg) => (
            versions::<diesel::pg::Pg>(&POSTGRES_MIGRATIONS)?,
            sql.load::<Applied>(pg),
        ),
    };
    let applied = applied.map_err(|e| format!("the schema is missing: {e}"))?;
    let missing = expected
        .iter()
        .filter(|version| !applied.iter().any(|a| &a.version == *version))
        .count();
    match missing {
        0 => Ok(()),
        n => Err(format!(
            "{n} of {} migrations are not applied",
            expected.len()
        )),
    }
}
