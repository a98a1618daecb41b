//! Contact times kept off the write path: a heartbeat that changes nothing but the time of contact is
//! remembered here and written with every other such contact in one statement, once a second. What
//! reads `last_seen_at` (the Online/Offline rule, the VM Machines list, the leases) is therefore at
//! most about [`FLUSH_EVERY`] behind, on every replica; state changes are written at once elsewhere.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::query_builder::BoxedSqlQuery;
use diesel::sql_types::{BigInt, Timestamp};

use crate::db::DbConnection;

/// How often each replica writes the contacts it has heard.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Machines per statement (two parameters each, well within either backend's limit).
const ROWS_PER_STATEMENT: usize = 5_000;

#[derive(Default)]
pub struct Contacts {
    pending: Mutex<HashMap<i64, NaiveDateTime>>,
}

impl Contacts {
    /// The machine was heard from at `at`.
    pub fn record(&self, machine_id: i64, at: NaiveDateTime) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let seen = pending.entry(machine_id).or_insert(at);
        if *seen < at {
            *seen = at;
        }
    }

    /// Writes what was heard since the last flush; on failure it is kept for the next one. A contact
    /// never moves `last_seen_at` back, nor touches a removed machine.
    pub fn flush(&self, conn: &mut DbConnection) -> QueryResult<usize> {
        let taken: Vec<(i64, NaiveDateTime)> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect();
        let mut written = 0;
        for (i, chunk) in taken.chunks(ROWS_PER_STATEMENT).enumerate() {
            if let Err(error) = write(conn, chunk) {
                for (machine_id, at) in &taken[i * ROWS_PER_STATEMENT..] {
                    self.record(*machine_id, *at);
                }
                return Err(error);
            }
            written += chunk.len();
        }
        Ok(written)
    }
}

/// One `UPDATE … FROM (VALUES …)` for a batch of machines.
fn write(conn: &mut DbConnection, contacts: &[(i64, NaiveDateTime)]) -> QueryResult<usize> {
    macro_rules! update {
        ($conn:expr, $backend:ty, $placeholder:expr) => {{
            let values: Vec<String> = (0..contacts.len())
                .map(|i| format!("({}, {})", $placeholder(2 * i + 1), $placeholder(2 * i + 2)))
                .collect();
            let sql = format!(
                "UPDATE machines SET last_seen_at = v.column2 FROM (VALUES {}) AS v \
                 WHERE machines.id = v.column1 AND machines.removed_at IS NULL \
                 AND (machines.last_seen_at IS NULL OR machines.last_seen_at < v.column2)",
                values.join(", ")
            );
            let mut query: BoxedSqlQuery<'_, $backend, _> = diesel::sql_query(sql).into_boxed();
            for (machine_id, at) in contacts {
                query = query
                    .bind::<BigInt, _>(*machine_id)
                    .bind::<Timestamp, _>(*at);
            }
            query.execute($conn)
        }};
    }
    match conn {
        DbConnection::Postgres(pg) => update!(pg, diesel::pg::Pg, |n: usize| format!(
            "${n}::{}",
            if n % 2 == 1 { "bigint" } else { "timestamp" }
        )),
        DbConnection::Sqlite(sqlite) => {
            update!(sqlite, diesel::sqlite::Sqlite, |_: usize| "?".to_owned())
        }
    }
}
