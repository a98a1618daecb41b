//! Attempts: every hand-out of a run to a machine, and how it ended, for the run's detail page. The
//! claim begins one (in its own statement on PostgreSQL); whatever ends the hand-out ends it.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::schema::{machines, run_attempts};
use crate::status::AttemptOutcome;

pub fn begin(
    conn: &mut DbConnection,
    run_id: i64,
    machine_id: i64,
    now: NaiveDateTime,
) -> QueryResult<()> {
    diesel::insert_into(run_attempts::table)
        .values((
            run_attempts::run_id.eq(run_id),
            run_attempts::machine_id.eq(machine_id),
            run_attempts::started_at.eq(now),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Ends the open attempt of the run (on any machine).
pub fn end(
    conn: &mut DbConnection,
    run_id: i64,
    outcome: AttemptOutcome,
    now: NaiveDateTime,
) -> QueryResult<()> {
    diesel::update(
        run_attempts::table
            .filter(run_attempts::run_id.eq(run_id))
            .filter(run_attempts::ended_at.is_null()),
    )
    .set((
        run_attempts::ended_at.eq(now),
        run_attempts::outcome.eq(outcome),
    ))
    .execute(conn)
    .map(|_| ())
}

/// One attempt as the run's page shows it.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub machine_id: i64,
    pub machine_name: String,
    pub machine_removed: bool,
    pub started_at: NaiveDateTime,
    pub ended_at: Option<NaiveDateTime>,
    pub outcome: Option<AttemptOutcome>,
}

/// A run's attempts, first first, with the names of their machines (removed ones too).
pub fn of_run(conn: &mut DbConnection, run_id: i64) -> QueryResult<Vec<Attempt>> {
    type Row = (
        i64,
        String,
        Option<NaiveDateTime>,
        NaiveDateTime,
        Option<NaiveDateTime>,
        Option<AttemptOutcome>,
    );
    let rows: Vec<Row> = run_attempts::table
        .inner_join(machines::table)
        .filter(run_attempts::run_id.eq(run_id))
        .order(run_attempts::id)
        .select((
            machines::id,
            machines::name,
            machines::removed_at,
            run_attempts::started_at,
            run_attempts::ended_at,
            run_attempts::outcome,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(
            |(machine_id, machine_name, removed, started_at, ended_at, outcome)| Attempt {
                machine_id,
                machine_name,
                machine_removed: removed.is_some(),
                started_at,
                ended_at,
                outcome,
            },
        )
        .collect())
}
