//! Cleaning up machines that have been Offline for days: first the list of those that would go (the
//! admin sees exactly what they confirm), then their removal, each as [`super::remove`] removes one
//! (credential refused, running job back in the queue), and one audit event for the whole cleanup.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::{Machine, live, release_removed};
use crate::audit::{self, Actor};
use crate::db::schema::machines;
use crate::db::{DbConnection, write_transaction};
use crate::runs::dispatch::Changes;

/// The most machines one cleanup lists and removes; a larger fleet of dead machines takes a few
/// rounds, each confirmed on what it showed.
pub const MOST_AT_ONCE: usize = 500;

/// "Offline for more than N days": a whole number of days from 1 to 3650.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfflineDays(u16);

impl OfflineDays {
    pub const DEFAULT: Self = Self(30);
    pub const MAX: u16 = 3650;

    pub fn parse(text: &str) -> Result<Self, String> {
        let wrong = || format!("Enter a whole number of days from 1 to {}.", Self::MAX);
        let text = text.trim();
        if text.is_empty() || text.len() > 6 {
            return Err(wrong());
        }
        let days: u32 = text.parse().map_err(|_| wrong())?;
        if !(1..=u32::from(Self::MAX)).contains(&days) {
            return Err(wrong());
        }
        Ok(Self(days as u16))
    }

    pub fn get(self) -> u16 {
        self.0
    }

    /// Machines last in contact at or before this moment have been offline for more than the days.
    pub fn cutoff(self, now: NaiveDateTime) -> NaiveDateTime {
        now - chrono::Duration::days(i64::from(self.0))
    }
}

/// The live machines of the organization offline since the cutoff, as a query (a machine that never
/// made contact counts from its enrollment).
fn offline_since(
    organization_id: i64,
    cutoff: NaiveDateTime,
) -> machines::BoxedQuery<'static, crate::db::DbConnectionBackend> {
    live(Some(organization_id)).filter(
        machines::last_seen_at.le(cutoff).or(machines::last_seen_at
            .is_null()
            .and(machines::enrolled_at.le(cutoff))),
    )
}

/// What a cleanup would remove: the machines longest offline first, at most [`MOST_AT_ONCE`], and
/// whether there are more beyond them.
pub struct Preview {
    pub machines: Vec<Machine>,
    pub more: bool,
}

pub fn preview(
    conn: &mut DbConnection,
    organization_id: i64,
    days: OfflineDays,
    now: NaiveDateTime,
) -> QueryResult<Preview> {
    let mut machines = offline_since(organization_id, days.cutoff(now))
        .order((
            machines::last_seen_at.asc(),
            machines::enrolled_at.asc(),
            machines::id.asc(),
        ))
        .limit(MOST_AT_ONCE as i64 + 1)
        .select(Machine::as_select())
        .load(conn)?;
    let more = machines.len() > MOST_AT_ONCE;
    machines.truncate(MOST_AT_ONCE);
    Ok(Preview { machines, more })
}

/// Removes those of the listed machines that are still offline for more than the days, checked in
/// the same statement that removes them (one that came back meanwhile stays), and audits the cleanup
/// once (`machines_cleaned_up`). Returns the machines removed.
pub fn remove_listed(
    conn: &mut DbConnection,
    organization_id: i64,
    days: OfflineDays,
    listed: &[i64],
    actor: &Actor,
    changes: &mut Changes,
) -> QueryResult<Vec<Machine>> {
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    write_transaction(conn, |conn| {
        let now = chrono::Utc::now().naive_utc();
        let cutoff = days.cutoff(now);
        // The same conditions as `offline_since`, written out: an update takes no boxed query.
        let mut removed = diesel::update(
            machines::table
                .filter(machines::id.eq_any(listed))
                .filter(machines::organization_id.eq(organization_id))
                .filter(machines::removed_at.is_null())
                .filter(
                    machines::last_seen_at.le(cutoff).or(machines::last_seen_at
                        .is_null()
                        .and(machines::enrolled_at.le(cutoff))),
                ),
        )
        .set((
            machines::removed_at.eq(now),
            machines::removed_by_user_id.eq(actor.user_id),
        ))
        .returning(machines::all_columns)
        .get_results::<Machine>(conn)?;
        if removed.is_empty() {
            return Ok(removed);
        }
        removed.sort_by_key(|m| m.id);
        let mut requeued = 0;
        for machine in &removed {
            requeued += release_removed(conn, machine, now, changes)?;
        }
        let ids: Vec<i64> = removed.iter().map(|m| m.id).collect();
        audit::record(
            conn,
            actor.event(
                organization_id,
                audit::Action::MachinesCleanedUp,
                "organization",
                organization_id,
                serde_json::json!({
                    "count": removed.len(), "ids": ids, "offline_days": days.get(),
                    "requeued_runs": requeued,
                }),
            ),
        )?;
        Ok(removed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_whole_and_bounded() {
        assert_eq!(OfflineDays::parse("30").unwrap().get(), 30);
        assert_eq!(OfflineDays::parse(" 1 ").unwrap().get(), 1);
        assert_eq!(OfflineDays::parse("3650").unwrap().get(), 3650);
        for bad in ["", "0", "3651", "-5", "2.5", "days", "99999999999", "3\0"] {
            assert!(OfflineDays::parse(bad).is_err(), "{bad:?}");
        }
    }
}
