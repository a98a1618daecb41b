//! The fleet in numbers: how many machines of each organization are Online, Busy and Offline, and
//! which capability lists are in contact (for "jobs no online machine can run"). Counting 10,000
//! machines on every dashboard refresh of every open tab would make the page's cost grow with the
//! fleet, so each replica takes one census of all organizations (one grouped query) at most once a
//! second and answers from it: the figures are never more than about [`FRESH_FOR`] behind, like the
//! contact times they are counted from ([`super::contacts`]).
//!
//! A machine enrolled, removed, paused, taking or finishing a run, or reporting a new status makes the
//! next reader take a new census at once, so an admin sees the effect of what was just done: database
//! triggers count every such change, on PostgreSQL in a sequence that readers compare with the one
//! their census was taken at (one cheap read), on SQLite by telling this process
//! ([`Fleet::changed`], through the pool). A machine coming back in contact is counted by the next
//! census (within [`FRESH_FOR`]), or at once when it reports a new status.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use diesel::QueryResult;

use super::{MachineFilter, StatusCounts};
use crate::db::DbConnection;
use crate::status::MachineStatus;

/// The longest a census is used.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// One organization's machines, as of the last census.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrgFleet {
    pub counts: StatusCounts,
    /// The distinct capability lists of machines that are Online or Busy.
    pub in_contact: Vec<Vec<String>>,
    /// Every distinct capability list, with its machines' counts per status.
    pub by_capabilities: Vec<(Vec<String>, StatusCounts)>,
}

impl OrgFleet {
    /// How many machines pass a filter without a search: of one status or all, holding a capability
    /// or any.
    pub fn matching(&self, filter: &MachineFilter) -> i64 {
        let counts = if filter.capability.is_empty() {
            self.counts
        } else {
            self.by_capabilities
                .iter()
                .filter(|(list, _)| list.contains(&filter.capability))
                .fold(StatusCounts::default(), |sum, (_, counts)| sum.plus(counts))
        };
        filter
            .status
            .map_or(counts.total(), |status| counts.of(&status))
    }
}

struct Census {
    taken: Instant,
    /// The PostgreSQL change count it was taken at.
    changes: Option<i64>,
    by_organization: HashMap<i64, OrgFleet>,
}

pub struct Fleet {
    offline_after: chrono::Duration,
    latest: Mutex<Option<Arc<Census>>>,
    /// Something changed since the latest census.
    changed: AtomicBool,
    /// One census at a time; readers that find it stale meanwhile wait for it.
    taking: Mutex<()>,
}

impl Fleet {
    pub fn new(offline_after: chrono::Duration) -> Self {
        Self {
            offline_after,
            latest: Mutex::new(None),
            changed: AtomicBool::new(false),
            taking: Mutex::new(()),
        }
    }

    /// A machine changed: the next reader counts again.
    pub fn changed(&self) {
        self.changed.store(true, Ordering::Release);
    }

    /// The organization's machines, from a census at most [`FRESH_FOR`] old.
    pub fn of(
        &self,
        conn: &mut DbConnection,
        organization_id: i64,
        now: NaiveDateTime,
    ) -> QueryResult<OrgFleet> {
        Ok(self
            .census(conn, now)?
            .by_organization
            .get(&organization_id)
            .cloned()
            .unwrap_or_default())
    }

    /// Every organization's machines together.
    pub fn all(&self, conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<StatusCounts> {
        let census = self.census(conn, now)?;
        Ok(census
            .by_organization
            .values()
            .fold(StatusCounts::default(), |sum, fleet| {
                sum.plus(&fleet.counts)
            }))
    }

    /// Takes a census if the latest is stale (the background sampler calls this every second, so
    /// readers seldom have to).
    pub fn refresh(&self, conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<()> {
        self.census(conn, now).map(|_| ())
    }

    fn usable(&self, changes: Option<i64>) -> Option<Arc<Census>> {
        if self.changed.load(Ordering::Acquire) {
            return None;
        }
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest
            .as_ref()
            .filter(|c| c.taken.elapsed() < FRESH_FOR && c.changes == changes)
            .cloned()
    }

    fn census(&self, conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<Arc<Census>> {
        let changes = super::changes_counted(conn)?;
        if let Some(census) = self.usable(changes) {
            return Ok(census);
        }
        let _taking = self.taking.lock().unwrap_or_else(|e| e.into_inner());
        // Someone else may have taken it while this reader waited.
        if let Some(census) = self.usable(changes) {
            return Ok(census);
        }
        let taken = Instant::now();
        self.changed.store(false, Ordering::Release);
        let mut by_organization: HashMap<i64, OrgFleet> = HashMap::new();
        for group in super::census(conn, now - self.offline_after)? {
            let fleet = by_organization.entry(group.organization_id).or_default();
            let status = MachineStatus::from_contact(group.in_contact != 0, group.busy != 0);
            fleet.counts.add(status, group.machines);
            let capabilities: Vec<String> =
                serde_json::from_str(&group.capabilities).unwrap_or_default();
            if status != MachineStatus::Offline && !fleet.in_contact.contains(&capabilities) {
                fleet.in_contact.push(capabilities.clone());
            }
            match fleet
                .by_capabilities
                .iter_mut()
                .find(|(list, _)| *list == capabilities)
            {
                Some((_, counts)) => counts.add(status, group.machines),
                None => {
                    let mut counts = StatusCounts::default();
                    counts.add(status, group.machines);
                    fleet.by_capabilities.push((capabilities, counts));
                }
            }
        }
        let census = Arc::new(Census {
            taken,
            changes,
            by_organization,
        });
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(census.clone());
        Ok(census)
    }
}
