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
//!
//! Under churn (machines taking and finishing runs all the time) readers share censuses: a reader
//! uses any census begun after the changes it knows of, so readers that queue behind one census share
//! the next one instead of each taking its own. Censuses then follow one another at most back to back,
//! however many readers there are.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Every distinct capability list, with its machines' counts per status.
    pub by_capabilities: Vec<(Vec<String>, StatusCounts)>,
}

impl OrgFleet {
    /// The distinct capability lists of machines that are Online or Busy.
    pub fn in_contact(&self) -> impl Iterator<Item = &[String]> {
        self.by_capabilities
            .iter()
            .filter(|(_, counts)| counts.online + counts.busy > 0)
            .map(|(list, _)| list.as_slice())
    }

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

/// How many machine changes there had been: counted by PostgreSQL's triggers (`None` on SQLite) and
/// told to this process ([`Fleet::changed`]). A census begun at a count reflects every change up to
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Changes {
    counted: Option<i64>,
    told: u64,
}

impl Changes {
    /// Whether a census begun at `self` reflects the changes of `known`.
    fn covers(&self, known: &Changes) -> bool {
        self.counted >= known.counted && self.told >= known.told
    }
}

struct Census {
    taken: Instant,
    /// The changes it was begun at.
    changes: Changes,
    by_organization: HashMap<i64, OrgFleet>,
}

pub struct Fleet {
    offline_after: chrono::Duration,
    latest: Mutex<Option<Arc<Census>>>,
    /// Changes told to this process, ever.
    told: AtomicU64,
    /// Censuses taken, ever (`granite_fleet_censuses_total`).
    taken: AtomicU64,
    /// One census at a time; readers that find it stale meanwhile wait for it.
    taking: Mutex<()>,
}

impl Fleet {
    pub fn new(offline_after: chrono::Duration) -> Self {
        Self {
            offline_after,
            latest: Mutex::new(None),
            told: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            taking: Mutex::new(()),
        }
    }

    /// A machine changed: the next reader counts again.
    pub fn changed(&self) {
        self.told.fetch_add(1, Ordering::AcqRel);
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

    /// How many censuses this replica has taken.
    pub fn censuses_taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// Takes a census if the latest is stale (the background sampler calls this every second, so
    /// readers seldom have to).
    pub fn refresh(&self, conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<()> {
        self.census(conn, now).map(|_| ())
    }

    fn changes(&self, conn: &mut DbConnection) -> QueryResult<Changes> {
        // Told first: a census begun at this count must not miss a change told meanwhile.
        let told = self.told.load(Ordering::Acquire);
        Ok(Changes {
            counted: super::changes_counted(conn)?,
            told,
        })
    }

    fn usable(&self, known: &Changes) -> Option<Arc<Census>> {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest
            .as_ref()
            .filter(|c| c.taken.elapsed() < FRESH_FOR && c.changes.covers(known))
            .cloned()
    }

    fn census(&self, conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<Arc<Census>> {
        let known = self.changes(conn)?;
        if let Some(census) = self.usable(&known) {
            return Ok(census);
        }
        let _taking = self.taking.lock().unwrap_or_else(|e| e.into_inner());
        // A census begun while this reader waited covers what it knew of.
        if let Some(census) = self.usable(&known) {
            return Ok(census);
        }
        let changes = self.changes(conn)?;
        let taken = Instant::now();
        self.taken.fetch_add(1, Ordering::Relaxed);
        // The query groups by the capabilities' text too, so each list comes up to four times (busy
        // or not, in contact or not): summed by text, parsed once.
        let mut by_list: HashMap<(i64, String), StatusCounts> = HashMap::new();
        for group in super::census(conn, now - self.offline_after)? {
            let status = MachineStatus::from_contact(group.in_contact != 0, group.busy != 0);
            by_list
                .entry((group.organization_id, group.capabilities))
                .or_default()
                .add(status, group.machines);
        }
        let mut by_organization: HashMap<i64, OrgFleet> = HashMap::new();
        for ((organization_id, capabilities), counts) in by_list {
            let fleet = by_organization.entry(organization_id).or_default();
            fleet.counts = fleet.counts.plus(&counts);
            let capabilities = serde_json::from_str(&capabilities).unwrap_or_default();
            fleet.by_capabilities.push((capabilities, counts));
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
