//! Handing a queued run to one machine, atomically. The statements differ per backend: on PostgreSQL one
//! statement picks the run with `FOR UPDATE SKIP LOCKED` (claimers on every replica pass each other by),
//! marks it running and the machine busy, in a single round trip; SQLite runs the same steps under
//! `BEGIN IMMEDIATE` (one writer at a time).

use chrono::NaiveDateTime;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamp};

use super::Run;
use crate::db::schema::{machines, runs};
use crate::db::statement::statement;
use crate::db::{DbConnection, write_transaction};
use crate::machines::Machine;
use crate::status::RunStatus;

/// Picks the oldest highest-priority queued run of the organization whose `requires` are all among the
/// capabilities (a JSON array), marks it running on the machine, and the machine busy with it.
///
/// Its columns are named, not `*`: the statement stays prepared on each connection, and PostgreSQL
/// refuses a kept statement whose result columns a migration (of a newer replica) changed.
///
/// The statuses are written into the text, not bound: the statement is prepared once and planned
/// for any values of its parameters, and only a literal `status = 'queued'` lets that plan use the
/// partial index of queued runs (`runs_queued`, the same words as [`RunStatus::Queued`]).
const CLAIM_POSTGRES: &str = "WITH gate AS ( \
       SELECT id FROM machines \
       WHERE id = $3 AND removed_at IS NULL AND paused_at IS NULL AND current_run_id IS NULL \
       FOR UPDATE), \
     picked AS ( \
       SELECT id FROM runs \
       WHERE organization_id = $1 AND status = 'queued' AND requires::jsonb <@ $2::jsonb \
         AND EXISTS (SELECT 1 FROM gate) \
       ORDER BY priority DESC, created_at, id \
       LIMIT 1 FOR UPDATE SKIP LOCKED), \
     claimed AS ( \
       UPDATE runs SET status = 'running', machine_id = $3, started_at = $4, attempts = runs.attempts + 1 \
       FROM picked WHERE runs.id = picked.id RETURNING runs.id, runs.public_id, runs.organization_id, \
         runs.api_key_id, runs.endpoint, runs.parameters, runs.requires, runs.priority, runs.status, \
         runs.result, runs.error_type, runs.error_message, runs.machine_id, runs.attempts, \
         runs.created_at, runs.started_at, runs.finished_at, runs.cancel_requested_at, \
         runs.retried_from_run_id), \
     busy AS ( \
       UPDATE machines SET current_run_id = claimed.id, last_seen_at = $4 FROM claimed WHERE machines.id = $3), \
     attempt AS ( \
       INSERT INTO run_attempts (run_id, machine_id, started_at) SELECT id, $3, $4 FROM claimed) \
     SELECT * FROM claimed";

/// The same pick, for SQLite (the status written in for the same reason).
const PICK_SQLITE: &str = "SELECT id FROM runs \
     WHERE organization_id = $1 AND status = 'queued' \
       AND NOT EXISTS (SELECT 1 FROM json_each(runs.requires) AS needed \
                       WHERE needed.value NOT IN (SELECT value FROM json_each($2))) \
     ORDER BY priority DESC, created_at, id \
     LIMIT 1";

#[derive(QueryableByName)]
struct Picked {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Takes the next run this machine can run and makes the machine Busy with it. Nothing while the
/// machine is paused, removed, or already holds a run (a second long-poll of the same machine): the
/// machine's row is checked, and on PostgreSQL locked, in the same statement or transaction, so two
/// claims of one machine, or a claim and a pause, cannot both win. What a machine still held is given
/// back before its claim (see [`super::leases::release_before_claim`]).
pub fn claim(
    conn: &mut DbConnection,
    machine: &Machine,
    now: NaiveDateTime,
) -> QueryResult<Option<Run>> {
    match conn {
        // The pick must walk `runs_queued` in its order and stop at the first fit. Right after a
        // burst of enqueues the table's statistics still say the queue is tiny, and the planner
        // would rather read every queued run and sort them (70 ms at 100,000 queued); sorting is
        // turned off for this statement so the plan does not depend on when autovacuum last
        // analysed the table.
        DbConnection::Postgres(pg) => pg.transaction(|pg| {
            pg.batch_execute("SET LOCAL enable_sort = off")?;
            statement(CLAIM_POSTGRES)
                .bind::<BigInt, _>(machine.organization_id)
                .bind::<Text, _>(&machine.capabilities)
                .bind::<BigInt, _>(machine.id)
                .bind::<Timestamp, _>(now)
                .get_result::<Run>(pg)
                .optional()
        }),
        DbConnection::Sqlite(_) => write_transaction(conn, |conn| claim_sqlite(conn, machine, now)),
    }
}

fn claim_sqlite(
    conn: &mut DbConnection,
    machine: &Machine,
    now: NaiveDateTime,
) -> QueryResult<Option<Run>> {
    let free: i64 = machines::table
        .find(machine.id)
        .filter(machines::removed_at.is_null())
        .filter(machines::paused_at.is_null())
        .filter(machines::current_run_id.is_null())
        .count()
        .get_result(conn)?;
    if free == 0 {
        return Ok(None);
    }
    let DbConnection::Sqlite(sqlite) = conn else {
        unreachable!("called for SQLite only")
    };
    let picked = statement(PICK_SQLITE)
        .bind::<BigInt, _>(machine.organization_id)
        .bind::<Text, _>(&machine.capabilities)
        .get_result::<Picked>(sqlite)
        .optional()?;
    let Some(Picked { id }) = picked else {
        return Ok(None);
    };
    let run = diesel::update(
        runs::table
            .find(id)
            .filter(runs::status.eq(RunStatus::Queued)),
    )
    .set((
        runs::status.eq(RunStatus::Running),
        runs::machine_id.eq(machine.id),
        runs::started_at.eq(now),
        runs::attempts.eq(runs::attempts + 1),
    ))
    .returning(runs::all_columns)
    .get_result::<Run>(conn)?;
    diesel::update(machines::table.find(machine.id))
        .set((
            machines::current_run_id.eq(run.id),
            machines::last_seen_at.eq(now),
        ))
        .execute(conn)?;
    super::attempts::begin(conn, run.id, machine.id, now)?;
    Ok(Some(run))
}
