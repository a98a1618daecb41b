//! Handing a queued run to one machine, atomically. The statements differ per backend: on PostgreSQL one
//! statement picks the run with `FOR UPDATE SKIP LOCKED` (claimers on every replica pass each other by),
//! marks it running and the machine busy, in a single round trip; SQLite runs the same steps under
//! `BEGIN IMMEDIATE` (one writer at a time).
//!
//! Which machine gets a run when several idle ones could take it: the highest machine priority, and
//! among equals the one idle the longest (round-robin). Every waiting machine is woken by a new run,
//! so each claim first asks which idle, online machines rank above this one ([`RIVALS`]); when there
//! are none (the common case) it takes the first run it can. Otherwise it hands the queued runs out in
//! order, in its head, each to the best-ranked free machine able to run it, and claims only the run
//! that falls to itself; the better machines claim theirs on their own. A run queued longer than
//! [`DEFER_FOR`] is taken by whoever asks, so a better machine that stays online without claiming
//! (a stuck driver) delays runs by seconds, not forever.

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

/// The claim statement on PostgreSQL around `picked` (and what it is made from), the run to take:
/// locks the machine (`$3`) if it is free, marks the run running on it at `$4` and the machine busy
/// with it, records the attempt, and returns the run, in a single round trip.
///
/// Its columns are named, not `*`: the statement stays prepared on each connection, and PostgreSQL
/// refuses a kept statement whose result columns a migration (of a newer replica) changed.
///
/// The statuses are written into the text, not bound: the statement is prepared once and planned
/// for any values of its parameters, and only a literal `status = 'queued'` lets that plan use the
/// partial index of queued runs (`runs_queued`, the same words as [`RunStatus::Queued`]).
macro_rules! claim_postgres {
    ($picked:literal) => {
        concat!(
            "WITH gate AS ( \
               SELECT id FROM machines \
               WHERE id = $3 AND removed_at IS NULL AND paused_at IS NULL AND current_run_id IS NULL \
               FOR UPDATE), \
             ",
            $picked,
            ", \
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
             SELECT * FROM claimed"
        )
    };
}

/// Takes the oldest highest-priority queued run of organization `$1` whose `requires` are all among
/// the capabilities `$2` (a JSON array): a walk of `runs_queued` in order that stops at the first fit.
const CLAIM_FIRST_POSTGRES: &str = claim_postgres!(
    "picked AS ( \
       SELECT id FROM runs \
       WHERE organization_id = $1 AND status = 'queued' AND requires::jsonb <@ $2::jsonb \
         AND EXISTS (SELECT 1 FROM gate) \
       ORDER BY priority DESC, created_at, id \
       LIMIT 1 FOR UPDATE SKIP LOCKED)"
);

/// Takes run `$5` if it is still a queued run of organization `$1` that capabilities `$2` can run.
/// Found by its key alone, the rest checked on the row once locked (`locked` is kept apart from
/// those conditions): with the organization and status among them the planner may walk the
/// organization's queued runs to it instead, every run before it (12 ms a claim, measured at 20,000
/// queued).
const CLAIM_CHOSEN_POSTGRES: &str = claim_postgres!(
    "locked AS MATERIALIZED ( \
       SELECT id, organization_id, status, requires FROM runs \
       WHERE id = $5 AND EXISTS (SELECT 1 FROM gate) \
       FOR UPDATE SKIP LOCKED), \
     picked AS ( \
       SELECT id FROM locked \
       WHERE organization_id = $1 AND status = 'queued' AND requires::jsonb <@ $2::jsonb)"
);

/// The same pick, for SQLite (the status written in for the same reason): the first `$3` runs this
/// machine can take, in the order they are handed out.
const PICK_SQLITE: &str = "SELECT id, requires, created_at FROM runs \
     WHERE organization_id = $1 AND status = 'queued' \
       AND NOT EXISTS (SELECT 1 FROM json_each(runs.requires) AS needed \
                       WHERE needed.value NOT IN (SELECT value FROM json_each($2))) \
     ORDER BY priority DESC, created_at, id \
     LIMIT $3";

/// The same candidates on PostgreSQL, read before the claim statement (which takes the one chosen).
const CANDIDATES_POSTGRES: &str = "SELECT id, requires, created_at FROM runs \
     WHERE organization_id = $1 AND status = 'queued' AND requires::jsonb <@ $2::jsonb \
     ORDER BY priority DESC, created_at, id \
     LIMIT $3";

/// The idle, online, unpaused machines of the organization that rank above machine `$1` (higher
/// priority; or equal and idle longer; or equal in both and enrolled first), best first: they get
/// runs before it. Through `machines_idle_by_priority`.
const RIVALS: &str = "SELECT m.capabilities FROM machines m JOIN machines me ON me.id = $1 \
     WHERE m.organization_id = me.organization_id AND m.id <> me.id \
       AND m.removed_at IS NULL AND m.paused_at IS NULL AND m.current_run_id IS NULL \
       AND m.last_seen_at >= $2 \
       AND (m.priority > me.priority \
            OR (m.priority = me.priority AND (m.idle_since < me.idle_since \
                OR (m.idle_since = me.idle_since AND m.id < me.id)))) \
     ORDER BY m.priority DESC, m.idle_since, m.id \
     LIMIT $3";

/// The most better-ranked machines a claim considers. Beyond them a machine is far down a large idle
/// fleet, and takes the run after theirs as if they were all the machines above it.
const MOST_RIVALS: i64 = 64;

/// A run queued this long is taken by any machine that can run it, whatever their ranks.
pub const DEFER_FOR: chrono::Duration = chrono::Duration::seconds(3);

#[derive(QueryableByName)]
struct Candidate {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    requires: String,
    #[diesel(sql_type = Timestamp)]
    created_at: NaiveDateTime,
}

#[derive(QueryableByName)]
struct Rival {
    #[diesel(sql_type = Text)]
    capabilities: String,
}

/// What a claim should take: any run it can (no machine ranks above it), one run chosen for it, or
/// nothing (every run it could take falls to a better machine).
#[derive(Debug, PartialEq, Eq)]
enum Share {
    First,
    Run(i64),
    Nothing,
}

fn parse_set(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// Hands `candidates` (in queue order) out to `rivals` (best first) and this machine, each run to the
/// best free machine that can run it: which one is this machine's? Runs queued before `stale_before`
/// go to whoever asks.
fn share_of(
    candidates: &[Candidate],
    rivals: &[Rival],
    stale_before: NaiveDateTime,
) -> Option<i64> {
    let mut free: Vec<Vec<String>> = rivals.iter().map(|r| parse_set(&r.capabilities)).collect();
    for run in candidates {
        if run.created_at < stale_before {
            return Some(run.id);
        }
        let requires = parse_set(&run.requires);
        let able = free
            .iter()
            .position(|caps| requires.iter().all(|needed| caps.contains(needed)));
        match able {
            Some(better) => {
                free.remove(better);
            }
            None => return Some(run.id),
        }
    }
    None
}

/// Decides what `machine` should take, reading on `conn` (inside the claim's transaction on SQLite).
fn share(
    conn: &mut DbConnection,
    machine: &Machine,
    now: NaiveDateTime,
    online_since: NaiveDateTime,
) -> QueryResult<Share> {
    let rivals = statement(RIVALS)
        .bind::<BigInt, _>(machine.id)
        .bind::<Timestamp, _>(online_since)
        .bind::<BigInt, _>(MOST_RIVALS);
    let rivals: Vec<Rival> = match conn {
        DbConnection::Sqlite(c) => rivals.load(c)?,
        DbConnection::Postgres(c) => rivals.load(c)?,
    };
    if rivals.is_empty() {
        return Ok(Share::First);
    }
    let wanted = rivals.len() as i64 + 1;
    let candidates: Vec<Candidate> = match conn {
        DbConnection::Sqlite(c) => statement(PICK_SQLITE)
            .bind::<BigInt, _>(machine.organization_id)
            .bind::<Text, _>(&machine.capabilities)
            .bind::<BigInt, _>(wanted)
            .load(c)?,
        DbConnection::Postgres(c) => statement(CANDIDATES_POSTGRES)
            .bind::<BigInt, _>(machine.organization_id)
            .bind::<Text, _>(&machine.capabilities)
            .bind::<BigInt, _>(wanted)
            .load(c)?,
    };
    Ok(match share_of(&candidates, &rivals, now - DEFER_FOR) {
        Some(id) => Share::Run(id),
        None => Share::Nothing,
    })
}

/// Takes the next run this machine can run, if no better-ranked idle machine should have it (see the
/// module's documentation), and makes the machine Busy with it. Nothing while the machine is paused,
/// removed, or already holds a run (a second long-poll of the same machine): the machine's row is
/// checked, and on PostgreSQL locked, in the same statement or transaction, so two claims of one
/// machine, or a claim and a pause, cannot both win. What a machine still held is given back before
/// its claim (see [`super::leases::release_before_claim`]). Machines count as online when heard from
/// since `online_since`.
pub fn claim(
    conn: &mut DbConnection,
    machine: &Machine,
    now: NaiveDateTime,
    online_since: NaiveDateTime,
) -> QueryResult<Option<Run>> {
    match conn {
        DbConnection::Postgres(_) => {
            // The run chosen for this machine may be taken by another in between (the read is not
            // locked); then the choice is made again. Lost twice, the machines are racing for a
            // queue they all can serve: it takes the first run it can, so a busy queue never
            // answers "nothing" while runs wait.
            for _ in 0..2 {
                let chosen = match share(conn, machine, now, online_since)? {
                    Share::Nothing => return Ok(None),
                    Share::First => None,
                    Share::Run(id) => Some(id),
                };
                let claimed = claim_postgres(conn, machine, now, chosen)?;
                if claimed.is_some() || chosen.is_none() {
                    return Ok(claimed);
                }
            }
            claim_postgres(conn, machine, now, None)
        }
        DbConnection::Sqlite(_) => {
            write_transaction(conn, |conn| claim_sqlite(conn, machine, now, online_since))
        }
    }
}

/// The claim statement: the first run this machine can take, or `chosen` if it is still queued.
fn claim_postgres(
    conn: &mut DbConnection,
    machine: &Machine,
    now: NaiveDateTime,
    chosen: Option<i64>,
) -> QueryResult<Option<Run>> {
    let DbConnection::Postgres(pg) = conn else {
        unreachable!("called for PostgreSQL only")
    };
    if let Some(chosen) = chosen {
        return statement(CLAIM_CHOSEN_POSTGRES)
            .bind::<BigInt, _>(machine.organization_id)
            .bind::<Text, _>(&machine.capabilities)
            .bind::<BigInt, _>(machine.id)
            .bind::<Timestamp, _>(now)
            .bind::<BigInt, _>(chosen)
            .get_result::<Run>(pg)
            .optional();
    }
    // The pick must walk `runs_queued` in its order and stop at the first fit. Right after a burst
    // of enqueues the table's statistics still say the queue is tiny, and the planner would rather
    // read every queued run and sort them (70 ms at 100,000 queued); sorting is turned off for this
    // statement so the plan does not depend on when autovacuum last analysed the table.
    pg.transaction(|pg| {
        pg.batch_execute("SET LOCAL enable_sort = off")?;
        statement(CLAIM_FIRST_POSTGRES)
            .bind::<BigInt, _>(machine.organization_id)
            .bind::<Text, _>(&machine.capabilities)
            .bind::<BigInt, _>(machine.id)
            .bind::<Timestamp, _>(now)
            .get_result::<Run>(pg)
            .optional()
    })
}

fn claim_sqlite(
    conn: &mut DbConnection,
    machine: &Machine,
    now: NaiveDateTime,
    online_since: NaiveDateTime,
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
    let id = match share(conn, machine, now, online_since)? {
        Share::Nothing => return Ok(None),
        Share::Run(id) => id,
        Share::First => {
            let DbConnection::Sqlite(sqlite) = conn else {
                unreachable!("called for SQLite only")
            };
            let first = statement(PICK_SQLITE)
                .bind::<BigInt, _>(machine.organization_id)
                .bind::<Text, _>(&machine.capabilities)
                .bind::<BigInt, _>(1)
                .get_result::<Candidate>(sqlite)
                .optional()?;
            match first {
                Some(run) => run.id,
                None => return Ok(None),
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
            .unwrap()
            .and_hms_opt(12, 0, second)
            .unwrap()
    }

    fn run(id: i64, requires: &str, second: u32) -> Candidate {
        Candidate {
            id,
            requires: requires.into(),
            created_at: at(second),
        }
    }

    fn rival(capabilities: &str) -> Rival {
        Rival {
            capabilities: capabilities.into(),
        }
    }

    #[test]
    fn runs_fall_to_better_machines_first() {
        let fresh = at(0);
        // One better machine that can run anything: it takes the first run, this one the second.
        let runs = [run(1, "[]", 10), run(2, "[]", 11)];
        assert_eq!(share_of(&runs, &[rival("[]")], fresh), Some(2));
        assert_eq!(share_of(&runs[..1], &[rival("[]")], fresh), None);
        // A better machine without `sap` leaves the `sap` run to this one.
        let runs = [run(1, r#"["sap"]"#, 10), run(2, "[]", 11)];
        assert_eq!(share_of(&runs, &[rival("[]")], fresh), Some(1));
        // Two better machines, two runs: nothing left for this one.
        let runs = [run(1, "[]", 10), run(2, "[]", 11)];
        assert_eq!(
            share_of(&runs, &[rival("[]"), rival(r#"["x"]"#)], fresh),
            None
        );
        // A run queued before the deferral's end goes to whoever asks.
        assert_eq!(
            share_of(&runs, &[rival("[]")], at(10) + chrono::Duration::seconds(1)),
            Some(1)
        );
    }
}
