//! Leases: a running run belongs to its machine only while the machine is in contact and says it holds
//! it. When the machine goes Offline or is removed, or its heartbeat reports another run or none, the
//! run goes back to the queue, or fails after its last attempt.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::MAX_ATTEMPTS;
use super::dispatch::Changes;
use crate::db::DbConnection;
use crate::db::schema::{machines, run_attempts, runs};
use crate::machines::Machine;
use crate::status::{AttemptOutcome, RunStatus};

pub const LOST_LEASE_ERROR: &str = "lease_lost";

/// The running runs `held` selects go back to the queue, or fail with [`LOST_LEASE_ERROR`] once they
/// have had their attempts.
macro_rules! take_back {
    ($conn:expr, $held:expr, $now:expr) => {{
        // Runs first (as complete and release do), then their attempts: the same lock order, and the
        // attempts closed are exactly those of the runs changed.
        let failed: Vec<i64> = diesel::update($held.filter(runs::attempts.ge(MAX_ATTEMPTS)))
            .set((
                runs::status.eq(RunStatus::Failed),
                runs::error_type.eq(LOST_LEASE_ERROR),
                runs::error_message.eq(format!(
                    "The run was handed to a machine {MAX_ATTEMPTS} times and each time the machine \
                     went offline, was removed or stopped reporting it before finishing it."
                )),
                runs::finished_at.eq($now),
            ))
            .returning(runs::id)
            .get_results($conn)?;
        let requeued: Vec<i64> = diesel::update($held)
            .set((
                runs::status.eq(RunStatus::Queued),
                runs::machine_id.eq(None::<i64>),
                runs::started_at.eq(None::<NaiveDateTime>),
            ))
            .returning(runs::id)
            .get_results($conn)?;
        for (ids, outcome) in [(&failed, AttemptOutcome::LeaseLost), (&requeued, AttemptOutcome::Lost)] {
            if !ids.is_empty() {
                diesel::update(
                    run_attempts::table
                        .filter(run_attempts::run_id.eq_any(ids))
                        .filter(run_attempts::ended_at.is_null()),
                )
                .set((
                    run_attempts::ended_at.eq($now),
                    run_attempts::outcome.eq(outcome),
                ))
                .execute($conn)?;
            }
        }
        Released {
            requeued: requeued.len(),
            failed: failed.len(),
        }
    }};
}

/// What taking back a machine's runs did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Runs back in the queue.
    pub requeued: usize,
    /// Runs that had had their attempts and failed with [`LOST_LEASE_ERROR`].
    pub failed: usize,
}

impl Released {
    /// Tells waiters what changed once the work has committed.
    pub fn announce(self, organization_id: i64, changes: &mut Changes) {
        if self.requeued > 0 {
            changes.queued(organization_id);
        }
        for _ in 0..self.failed {
            changes.finished(organization_id, RunStatus::Failed);
        }
    }
}

/// Takes back what a machine holds: its running runs are queued again (or failed once they have had
/// their attempts) and the machine holds nothing.
pub fn release_machine(
    conn: &mut DbConnection,
    machine_id: i64,
    now: NaiveDateTime,
) -> QueryResult<Released> {
    let held = runs::table
        .filter(runs::machine_id.eq(machine_id))
        .filter(runs::status.eq(RunStatus::Running));
    let released = take_back!(conn, held, now);
    diesel::update(machines::table.find(machine_id))
        .set(machines::current_run_id.eq(None::<i64>))
        .execute(conn)?;
    Ok(released)
}

/// Takes back one run from a machine, if it still runs there and was handed out before `cutoff`: the
/// conditions are in the statements, so a decision made on an earlier read cannot take back a run the
/// machine was handed again a moment ago.
fn release_run(
    conn: &mut DbConnection,
    machine_id: i64,
    run_id: i64,
    cutoff: NaiveDateTime,
    now: NaiveDateTime,
) -> QueryResult<Released> {
    let held = runs::table
        .filter(runs::id.eq(run_id))
        .filter(runs::machine_id.eq(machine_id))
        .filter(runs::status.eq(RunStatus::Running))
        .filter(runs::started_at.le(cutoff));
    let released = take_back!(conn, held, now);
    Ok(released)
}

/// Frees a machine of a run it no longer holds (cancelled, or just taken back), unless it holds
/// another one by now.
fn forget_run(conn: &mut DbConnection, machine_id: i64, run_id: i64) -> QueryResult<()> {
    diesel::update(
        machines::table
            .find(machine_id)
            .filter(machines::current_run_id.eq(run_id)),
    )
    .set(machines::current_run_id.eq(None::<i64>))
    .execute(conn)
    .map(|_| ())
}

/// `runs.status = 'running'` written into the statement, not bound: only a literal lets both planners
/// read the partial index of running runs (`runs_running_by_machine`) instead of every run a machine
/// ever ran.
fn running() -> diesel::expression::SqlLiteral<diesel::sql_types::Bool> {
    diesel::dsl::sql(&format!("runs.status = '{}'", RunStatus::Running.as_str()))
}

/// Releases the runs of every machine that went Offline or was removed while running one, noting in
/// `changes` what waiters must hear. Safe to run on every replica at once.
pub fn release_lost(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    offline_after: chrono::Duration,
    changes: &mut Changes,
) -> QueryResult<()> {
    let cutoff = now - offline_after;
    // The machines running a run, found from the runs (as many as run now), then looked up by id:
    // as a join, SQLite walked every machine and looked for its run.
    let lost: Vec<(i64, i64)> = machines::table
        .filter(
            machines::id
                .nullable()
                .eq_any(runs::table.filter(running()).select(runs::machine_id)),
        )
        .filter(
            machines::removed_at
                .is_not_null()
                .or(machines::last_seen_at.le(cutoff))
                .or(machines::last_seen_at.is_null()),
        )
        .select((machines::id, machines::organization_id))
        .load(conn)?;
    // Machines still marked busy with a run that was cancelled, by a machine that then went quiet.
    let stale: Vec<(i64, Option<i64>)> = machines::table
        .filter(machines::current_run_id.is_not_null())
        .filter(
            machines::removed_at
                .is_not_null()
                .or(machines::last_seen_at.le(cutoff)),
        )
        .select((machines::id, machines::current_run_id))
        .load(conn)?;
    for (machine_id, organization_id) in lost {
        // One machine's failure must not keep the others' runs (or the news of them) waiting.
        let released = match crate::db::write_transaction(conn, |conn| {
            // Read again inside the transaction: the machine may have come back since.
            let still_lost: i64 = machines::table
                .find(machine_id)
                .filter(
                    machines::removed_at
                        .is_not_null()
                        .or(machines::last_seen_at.le(cutoff))
                        .or(machines::last_seen_at.is_null()),
                )
                .count()
                .get_result(conn)?;
            if still_lost == 0 {
                return Ok(Released::default());
            }
            release_machine(conn, machine_id, now)
        }) {
            Ok(released) => released,
            Err(error) => {
                tracing::warn!(%error, machine_id, "could not take back the runs of a lost machine");
                continue;
            }
        };
        if released.requeued > 0 {
            tracing::info!(
                machine_id,
                requeued = released.requeued,
                failed = released.failed,
                "runs of a machine that went offline are back in the queue"
            );
        }
        released.announce(organization_id, changes);
    }
    for (machine_id, run_id) in stale {
        // Only if it still holds that run and is still out of contact: it may have come back.
        diesel::update(
            machines::table
                .find(machine_id)
                .filter(machines::current_run_id.eq(run_id))
                .filter(
                    machines::removed_at
                        .is_not_null()
                        .or(machines::last_seen_at.le(cutoff)),
                ),
        )
        .set(machines::current_run_id.eq(None::<i64>))
        .execute(conn)?;
    }
    Ok(())
}

/// A claim means the driver holds nothing: whatever the machine still held (the claim handler asks
/// only when it holds a run) goes back to the queue, or fails after its last attempt, before it is
/// handed another run. Except a run handed out within [`HANDOVER_GRACE`]: it may be the answer to
/// another claim of the same machine still on its way (one on another replica), and taking it back
/// would have it run twice; the machine stays busy with it, and the heartbeat settles it.
pub fn release_before_claim(
    conn: &mut DbConnection,
    machine: &Machine,
    now: NaiveDateTime,
    changes: &mut Changes,
) -> QueryResult<()> {
    let Some(run_id) = machine.current_run_id else {
        return Ok(());
    };
    let released = crate::db::write_transaction(conn, |conn| {
        let released = release_run(conn, machine.id, run_id, now - HANDOVER_GRACE, now)?;
        let still_held: i64 = runs::table
            .filter(runs::id.eq(run_id))
            .filter(runs::machine_id.eq(machine.id))
            .filter(runs::status.eq(RunStatus::Running))
            .count()
            .get_result(conn)?;
        if still_held == 0 {
            forget_run(conn, machine.id, run_id)?;
        }
        Ok::<_, diesel::result::Error>(released)
    })?;
    released.announce(machine.organization_id, changes);
    Ok(())
}

/// A run just handed out may be missing from a heartbeat that crossed the claim's answer on the wire;
/// only a run held longer than this is taken back for not being reported.
pub const HANDOVER_GRACE: chrono::Duration = chrono::Duration::seconds(3);

/// The heartbeat is authoritative about what a driver holds. `reported` is the run the driver says it
/// runs. A run the server gave this machine that the driver does not report goes back to the queue
/// (the attempt counts); a run the driver reports that is no longer its to run (cancelled, given to
/// another machine, unknown) is returned, for the reply's `cancel` list.
pub fn reconcile(
    conn: &mut DbConnection,
    machine: &Machine,
    reported: Option<&str>,
    now: NaiveDateTime,
    changes: &mut Changes,
) -> QueryResult<Vec<String>> {
    let held: Option<(String, RunStatus, Option<NaiveDateTime>)> = match machine.current_run_id {
        Some(run_id) => runs::table
            .find(run_id)
            .select((runs::public_id, runs::status, runs::started_at))
            .first(conn)
            .optional()?,
        None => None,
    };
    if let (Some(run_id), Some((public_id, status, started_at))) = (machine.current_run_id, &held)
        && reported != Some(public_id.as_str())
    {
        let handed_over_long_ago = started_at.is_none_or(|at| at <= now - HANDOVER_GRACE);
        if *status != RunStatus::Running {
            forget_run(conn, machine.id, run_id)?;
        } else if handed_over_long_ago {
            let released = crate::db::write_transaction(conn, |conn| {
                let released = release_run(conn, machine.id, run_id, now - HANDOVER_GRACE, now)?;
                if released.requeued + released.failed > 0 {
                    forget_run(conn, machine.id, run_id)?;
                }
                Ok::<_, diesel::result::Error>(released)
            })?;
            if released.requeued + released.failed > 0 {
                tracing::info!(
                    machine_id = machine.id,
                    run = %public_id,
                    "the machine no longer reports its run; it goes back to the queue"
                );
            }
            released.announce(machine.organization_id, changes);
        }
    }
    let Some(reported) = reported else {
        return Ok(Vec::new());
    };
    let still_its_own = match &held {
        Some((public_id, status, _)) if public_id == reported => *status == RunStatus::Running,
        _ => {
            runs::table
                .filter(runs::public_id.eq(reported))
                .filter(runs::machine_id.eq(machine.id))
                .filter(runs::status.eq(RunStatus::Running))
                .count()
                .get_result::<i64>(conn)?
                > 0
        }
    };
    Ok(if still_its_own {
        Vec::new()
    } else {
        vec![reported.to_owned()]
    })
}
