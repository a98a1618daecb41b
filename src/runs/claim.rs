//! Handing a queued run to one machine, atomically. The query that picks the run differs per backend:
//! PostgreSQL locks it with `FOR UPDATE SKIP LOCKED` (claimers on every replica pass each other by),
//! SQLite runs the whole claim under `BEGIN IMMEDIATE` (one writer at a time).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use super::{Run, leases};
use crate::db::schema::{machines, runs};
use crate::db::{DbConnection, write_transaction};
use crate::machines::Machine;

/// The oldest highest-priority queued run of the organization whose `requires` are all among the
/// capabilities (a JSON array).
const PICK_POSTGRES: &str = "SELECT id FROM runs \
     WHERE organization_id = $1 AND status = 'queued' AND requires::jsonb <@ $2::jsonb \
     ORDER BY priority DESC, created_at, id \
     LIMIT 1 FOR UPDATE SKIP LOCKED";

const PICK_SQLITE: &str = "SELECT id FROM runs \
     WHERE organization_id = ? AND status = 'queued' \
       AND NOT EXISTS (SELECT 1 FROM json_each(runs.requires) AS needed \
                       WHERE needed.value NOT IN (SELECT value FROM json_each(?))) \
     ORDER BY priority DESC, created_at, id \
     LIMIT 1";

#[derive(QueryableByName)]
struct Picked {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Takes the next run this machine can run, makes the machine Busy with it, and records the contact.
/// A claim also means the driver holds nothing else: whatever it still held goes back to the queue.
pub fn claim(conn: &mut DbConnection, machine: &Machine, now: NaiveDateTime) -> QueryResult<Option<Run>> {
    write_transaction(conn, |conn| {
        if machine.current_run_id.is_some() {
            leases::release_machine(conn, machine.id, now)?;
        }
        let picked = match conn {
            DbConnection::Postgres(pg) => diesel::sql_query(PICK_POSTGRES)
                .bind::<BigInt, _>(machine.organization_id)
                .bind::<Text, _>(&machine.capabilities)
                .get_result::<Picked>(pg)
                .optional()?,
            DbConnection::Sqlite(sqlite) => diesel::sql_query(PICK_SQLITE)
                .bind::<BigInt, _>(machine.organization_id)
                .bind::<Text, _>(&machine.capabilities)
                .get_result::<Picked>(sqlite)
                .optional()?,
        };
        let Some(Picked { id }) = picked else {
            diesel::update(machines::table.find(machine.id)).set(machines::last_seen_at.eq(now)).execute(conn)?;
            return Ok(None);
        };
        let run = diesel::update(runs::table.find(id).filter(runs::status.eq("queued")))
            .set((
                runs::status.eq("running"),
                runs::machine_id.eq(machine.id),
                runs::started_at.eq(now),
                runs::attempts.eq(runs::attempts + 1),
            ))
            .returning(runs::all_columns)
            .get_result::<Run>(conn)?;
        diesel::update(machines::table.find(machine.id))
            .set((machines::current_run_id.eq(run.id), machines::last_seen_at.eq(now)))
            .execute(conn)?;
        Ok(Some(run))
    })
}
