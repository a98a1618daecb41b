//! Driver machines: what they tell us about themselves, their heartbeats, removal, and the lists and
//! counts of the VM Machines section (the status rule itself is [`MachineStatus::from_last_seen`]).

pub mod cleanup;
pub mod contacts;
pub mod fleet;
pub mod memory;
pub mod settings;

use std::net::IpAddr;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::audit::{self, Actor};
use crate::db::schema::{machine_capabilities, machines, runs};
use crate::db::statement::statement;
use crate::db::{DbConnection, write_transaction};
use crate::runs::dispatch::Changes;
use crate::status::{MachineStatus, ReportedStatus, RunStatus};

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = machines)]
pub struct Machine {
    pub id: i64,
    pub organization_id: i64,
    pub name: String,
    pub os_version: String,
    pub ip_address: String,
    pub capabilities: String,
    pub driver_version: String,
    pub credential_hash: String,
    pub enrollment_token_id: Option<i64>,
    pub enrolled_at: NaiveDateTime,
    pub last_seen_at: Option<NaiveDateTime>,
    pub reported_status: ReportedStatus,
    pub current_run_id: Option<i64>,
    pub removed_at: Option<NaiveDateTime>,
    pub removed_by_user_id: Option<i64>,
    /// When the driver last started, as it announced.
    pub driver_started_at: Option<NaiveDateTime>,
    /// An admin paused (drained) the machine: it finishes its run and takes no new one.
    pub paused_at: Option<NaiveDateTime>,
    pub paused_by_user_id: Option<i64>,
    /// Set by an admin: among idle machines that can take a run, the highest priority gets it.
    pub priority: i32,
    /// When the machine last stopped holding a run (kept by a trigger); among equals, the machine idle
    /// the longest gets the next run.
    pub idle_since: Option<NaiveDateTime>,
}

impl Machine {
    pub fn status(&self, now: NaiveDateTime, offline_after: chrono::Duration) -> MachineStatus {
        MachineStatus::from_last_seen(
            self.last_seen_at,
            self.current_run_id.is_some(),
            now,
            offline_after,
        )
    }

    pub fn capability_list(&self) -> Vec<String> {
        serde_json::from_str(&self.capabilities).unwrap_or_default()
    }
}

/// What a driver says about itself at enrollment. Every field is untrusted: checked and bounded here,
/// escaped wherever it is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineProfile {
    pub name: String,
    pub os_version: String,
    /// The address the machine says it has (shown in the list), else the one it enrolled from.
    pub ip_address: String,
    pub capabilities: Vec<String>,
    pub driver_version: String,
    /// The address the enrollment came from, as the server saw it: what the audit log records.
    pub request_ip: Option<String>,
}

pub const MAX_CAPABILITIES: usize = 32;

impl MachineProfile {
    pub fn parse(
        name: &str,
        os_version: &str,
        ip_address: Option<&str>,
        request_ip: Option<IpAddr>,
        capabilities: &[String],
        driver_version: &str,
    ) -> Result<Self, String> {
        let name = bounded("name", name, 1, 100)?;
        let os_version = bounded("os_version", os_version, 0, 100)?;
        let driver_version = bounded("driver_version", driver_version, 0, 50)?;
        // An address, or an address and the port the driver listens on ("10.0.0.5:5000",
        // "[fd00::5]:5000"), written back in one canonical form.
        let ip_address = match ip_address.map(str::trim).filter(|ip| !ip.is_empty()) {
            Some(text) => match text.parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => text
                    .parse::<std::net::SocketAddr>()
                    .map_err(|_| {
                        format!(
                            "ip_address \"{}\" is not an IP address (or address:port)",
                            text.chars().take(60).collect::<String>()
                        )
                    })?
                    .to_string(),
            },
            None => request_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        };
        let capabilities = parse_capabilities(capabilities)?;
        Ok(Self {
            name,
            os_version,
            ip_address,
            capabilities,
            driver_version,
            request_ip: request_ip.map(|ip| ip.to_string()),
        })
    }
}

fn bounded(field: &str, text: &str, min: usize, max: usize) -> Result<String, String> {
    let text = text.trim();
    let chars = text.chars().count();
    if chars < min || chars > max {
        return Err(if min > 0 {
            format!("{field} must be {min} to {max} characters")
        } else {
            format!("{field} must be at most {max} characters")
        });
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(text.to_owned())
}

/// Capabilities (and a run's `requires`): at most 32 short names of letters, digits and `._:+-`,
/// de-duplicated, order kept.
pub fn parse_capabilities(items: &[String]) -> Result<Vec<String>, String> {
    if items.len() > MAX_CAPABILITIES {
        return Err(format!("at most {MAX_CAPABILITIES} capabilities"));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let item = item.trim();
        let valid = !item.is_empty()
            && item.len() <= 50
            && item
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:+-".contains(&b));
        if !valid {
            return Err("each capability is 1–50 letters, digits or . _ : + -".into());
        }
        if !out.iter().any(|c| c == item) {
            out.push(item.to_owned());
        }
    }
    Ok(out)
}

pub fn insert(
    conn: &mut DbConnection,
    organization_id: i64,
    profile: &MachineProfile,
    credential_hash: &str,
    enrollment_token_id: i64,
    now: NaiveDateTime,
) -> QueryResult<Machine> {
    diesel::insert_into(machines::table)
        .values((
            machines::organization_id.eq(organization_id),
            machines::name.eq(&profile.name),
            machines::os_version.eq(&profile.os_version),
            machines::ip_address.eq(&profile.ip_address),
            machines::capabilities
                .eq(serde_json::to_string(&profile.capabilities).expect("strings serialize")),
            machines::driver_version.eq(&profile.driver_version),
            machines::credential_hash.eq(credential_hash),
            machines::enrollment_token_id.eq(enrollment_token_id),
            machines::enrolled_at.eq(now),
            machines::last_seen_at.eq(now),
            machines::idle_since.eq(now),
        ))
        .returning(machines::all_columns)
        .get_result::<Machine>(conn)
}

/// What a driver says about itself when it starts (in its first heartbeat): each part replaces what
/// the server knew. Checked and bounded like an enrollment's profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriverAnnouncement {
    pub capabilities: Option<Vec<String>>,
    pub os_version: Option<String>,
    pub driver_version: Option<String>,
    pub started_at: Option<NaiveDateTime>,
}

impl DriverAnnouncement {
    /// Checks each part; an error names the field.
    pub fn parse(
        capabilities: Option<&[String]>,
        os_version: Option<&str>,
        driver_version: Option<&str>,
        started_at: Option<NaiveDateTime>,
        now: NaiveDateTime,
    ) -> Result<Self, (&'static str, String)> {
        let capabilities = capabilities
            .map(parse_capabilities)
            .transpose()
            .map_err(|e| ("capabilities", format!("capabilities: {e}.")))?;
        let os_version = os_version
            .map(|v| bounded("os_version", v, 0, 100))
            .transpose()
            .map_err(|e| ("os_version", format!("{e}.")))?;
        let driver_version = driver_version
            .map(|v| bounded("driver_version", v, 0, 50))
            .transpose()
            .map_err(|e| ("driver_version", format!("{e}.")))?;
        // A clock a little ahead is tolerated; a start in the future is not believed.
        let started_at = started_at.map(|at| at.min(now));
        Ok(Self {
            capabilities,
            os_version,
            driver_version,
            started_at,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The columns an announcement sets; `None` leaves a column as it is.
#[derive(AsChangeset)]
#[diesel(table_name = machines)]
struct Announced<'a> {
    capabilities: Option<String>,
    os_version: Option<&'a str>,
    driver_version: Option<&'a str>,
    driver_started_at: Option<NaiveDateTime>,
}

/// Records what a driver announced, in one statement.
pub fn announce(
    conn: &mut DbConnection,
    machine_id: i64,
    announced: &DriverAnnouncement,
) -> QueryResult<()> {
    if announced.is_empty() {
        return Ok(());
    }
    diesel::update(machines::table.find(machine_id))
        .set(Announced {
            capabilities: announced
                .capabilities
                .as_ref()
                .map(|c| serde_json::to_string(c).expect("strings serialize")),
            os_version: announced.os_version.as_deref(),
            driver_version: announced.driver_version.as_deref(),
            driver_started_at: announced.started_at,
        })
        .execute(conn)
        .map(|_| ())
}

/// Pauses (drains) a machine or resumes it: a paused machine finishes its run and is handed no new
/// one. Resuming wakes its waiting claim. Audited; `None` when the organization has no such machine.
pub fn set_paused(
    conn: &mut DbConnection,
    organization_id: i64,
    machine_id: i64,
    paused: bool,
    actor: &Actor,
    changes: &mut Changes,
) -> QueryResult<Option<Machine>> {
    write_transaction(conn, |conn| {
        let Some(machine) = find(conn, organization_id, machine_id)? else {
            return Ok(None);
        };
        if machine.paused_at.is_some() == paused {
            return Ok(Some(machine));
        }
        let now = chrono::Utc::now().naive_utc();
        let (paused_at, paused_by) = if paused {
            (Some(now), Some(actor.user_id))
        } else {
            (None, None)
        };
        let updated = diesel::update(machines::table.find(machine.id))
            .set((
                machines::paused_at.eq(paused_at),
                machines::paused_by_user_id.eq(paused_by),
            ))
            .returning(machines::all_columns)
            .get_result::<Machine>(conn)?;
        audit::record(
            conn,
            actor.event(
                organization_id,
                if paused {
                    audit::Action::MachinePaused
                } else {
                    audit::Action::MachineResumed
                },
                "machine",
                machine.id,
                serde_json::json!({ "name": machine.name }),
            ),
        )?;
        if !paused {
            changes.queued(organization_id);
        }
        Ok(Some(updated))
    })
}

/// Why a machine credential was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialRejection {
    Unknown,
    Removed,
}

/// A machine as a heartbeat finds it, read without writing: the machine and the run it holds.
#[derive(Clone, Debug)]
pub struct Presence {
    pub machine: Machine,
    /// The public id and status of the run in `current_run_id`.
    pub held: Option<(String, RunStatus)>,
}

/// What a heartbeat that announces nothing finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    Removed,
    /// Nothing changes but the time of contact.
    Unchanged {
        machine_id: i64,
        paused: bool,
    },
    /// Something is news: the heartbeat is written at once.
    Changed,
}

impl Presence {
    /// What a heartbeat reporting `status` and the run `reported` finds ([`Presence::unchanged_by`]).
    pub fn heard(
        &self,
        status: ReportedStatus,
        reported: Option<&str>,
        now: NaiveDateTime,
        offline_after: chrono::Duration,
    ) -> Heard {
        if self.machine.removed_at.is_some() {
            Heard::Removed
        } else if self.unchanged_by(status, reported, now, offline_after) {
            Heard::Unchanged {
                machine_id: self.machine.id,
                paused: self.machine.paused_at.is_some(),
            }
        } else {
            Heard::Changed
        }
    }

    /// Whether a heartbeat that reports `status` and the run `reported` (and announces nothing)
    /// changes nothing but the time of contact: the machine is Online or Busy already (one coming
    /// back is news), same status, and the driver runs exactly the run it holds, still running (or
    /// none and it holds none).
    fn unchanged_by(
        &self,
        status: ReportedStatus,
        reported: Option<&str>,
        now: NaiveDateTime,
        offline_after: chrono::Duration,
    ) -> bool {
        self.machine.status(now, offline_after) != MachineStatus::Offline
            && self.machine.reported_status == status
            && match (&self.held, reported) {
                (None, None) => self.machine.current_run_id.is_none(),
                (Some((held, held_status)), Some(reported)) => {
                    held == reported && *held_status == RunStatus::Running
                }
                _ => false,
            }
    }
}

/// The machine with this credential (removed or not) and its run: one indexed read.
pub fn presence(conn: &mut DbConnection, credential_hash: &str) -> QueryResult<Option<Presence>> {
    machines::table
        .left_join(runs::table.on(machines::current_run_id.eq(runs::id.nullable())))
        .filter(machines::credential_hash.eq(credential_hash))
        .select((
            Machine::as_select(),
            (runs::public_id, runs::status).nullable(),
        ))
        .first::<(Machine, Option<(String, RunStatus)>)>(conn)
        .optional()
        .map(|found| found.map(|(machine, held)| Presence { machine, held }))
}

/// Authenticates a heartbeat that changes the machine and writes it in one statement: the reported
/// status and last seen of the live machine with this credential.
pub fn touch(
    conn: &mut DbConnection,
    credential_hash: &str,
    reported_status: ReportedStatus,
    now: NaiveDateTime,
) -> QueryResult<Result<Machine, CredentialRejection>> {
    let live = machines::table
        .filter(machines::credential_hash.eq(credential_hash))
        .filter(machines::removed_at.is_null());
    let updated = diesel::update(live)
        .set((
            machines::last_seen_at.eq(now),
            machines::reported_status.eq(reported_status),
        ))
        .returning(machines::all_columns)
        .get_result::<Machine>(conn)
        .optional()?;
    match updated {
        Some(machine) => Ok(Ok(machine)),
        None => identify(conn, credential_hash),
    }
}

/// Authenticates a driver call by one read: the live machine with this credential. Writes nothing:
/// the caller records the contact ([`contacts`]), so a claim or a report costs no write (and no
/// flush to disk) of its own for it.
pub fn identify(
    conn: &mut DbConnection,
    credential_hash: &str,
) -> QueryResult<Result<Machine, CredentialRejection>> {
    let found = machines::table
        .filter(machines::credential_hash.eq(credential_hash))
        .first::<Machine>(conn)
        .optional()?;
    Ok(match found {
        None => Err(CredentialRejection::Unknown),
        Some(machine) if machine.removed_at.is_some() => Err(CredentialRejection::Removed),
        Some(machine) => Ok(machine),
    })
}

/// A live machine of the organization (not removed).
pub fn find(
    conn: &mut DbConnection,
    organization_id: i64,
    machine_id: i64,
) -> QueryResult<Option<Machine>> {
    Ok(find_including_removed(conn, organization_id, machine_id)?
        .filter(|machine| machine.removed_at.is_none()))
}

/// A machine of the organization even if it was removed (its page and its history keep its name).
pub fn find_including_removed(
    conn: &mut DbConnection,
    organization_id: i64,
    machine_id: i64,
) -> QueryResult<Option<Machine>> {
    machines::table
        .filter(machines::id.eq(machine_id))
        .filter(machines::organization_id.eq(organization_id))
        .select(Machine::as_select())
        .first(conn)
        .optional()
}

/// A machine's name as lists show it, and whether it was removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineName {
    pub name: String,
    pub removed: bool,
}

/// The names of these machines (removed ones included), in one query.
pub fn names(
    conn: &mut DbConnection,
    ids: &[i64],
) -> QueryResult<std::collections::HashMap<i64, MachineName>> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(i64, String, Option<NaiveDateTime>)> = machines::table
        .filter(machines::id.eq_any(ids))
        .select((machines::id, machines::name, machines::removed_at))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(id, name, removed)| {
            (
                id,
                MachineName {
                    name,
                    removed: removed.is_some(),
                },
            )
        })
        .collect())
}

/// Removes a machine: its credential is refused from now on and its running job goes back to the queue.
pub fn remove(
    conn: &mut DbConnection,
    organization_id: i64,
    machine_id: i64,
    actor: &Actor,
    changes: &mut Changes,
) -> QueryResult<Option<Machine>> {
    write_transaction(conn, |conn| {
        let Some(machine) = find(conn, organization_id, machine_id)? else {
            return Ok(None);
        };
        let now = chrono::Utc::now().naive_utc();
        diesel::update(machines::table.find(machine.id))
            .set((
                machines::removed_at.eq(now),
                machines::removed_by_user_id.eq(actor.user_id),
            ))
            .execute(conn)?;
        let requeued = release_removed(conn, &machine, now, changes)?;
        audit::record(
            conn,
            actor.event(
                organization_id,
                audit::Action::MachineRemoved,
                "machine",
                machine.id,
                serde_json::json!({
                    "name": machine.name, "requeued_runs": requeued,
                }),
            ),
        )?;
        Ok(Some(machine))
    })
}

/// What removing a machine does beyond marking it removed (inside the transaction that marked it):
/// its running job goes back to the queue. Returns how many runs were queued again.
fn release_removed(
    conn: &mut DbConnection,
    machine: &Machine,
    now: NaiveDateTime,
    changes: &mut Changes,
) -> QueryResult<usize> {
    let released = crate::runs::leases::release_machine(conn, machine.id, now)?;
    let requeued = released.requeued;
    released.announce(machine.organization_id, changes);
    Ok(requeued)
}

/// Machines Online and Busy right now (together: Active Drivers), and Offline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub online: i64,
    pub busy: i64,
    pub offline: i64,
}

impl StatusCounts {
    pub fn total(&self) -> i64 {
        self.online + self.busy + self.offline
    }

    pub fn plus(&self, other: &StatusCounts) -> StatusCounts {
        StatusCounts {
            online: self.online + other.online,
            busy: self.busy + other.busy,
            offline: self.offline + other.offline,
        }
    }

    pub fn add(&mut self, status: MachineStatus, machines: i64) {
        match status {
            MachineStatus::Online => self.online += machines,
            MachineStatus::Busy => self.busy += machines,
            MachineStatus::Offline => self.offline += machines,
        }
    }

    pub fn of(&self, status: &MachineStatus) -> i64 {
        match status {
            MachineStatus::Online => self.online,
            MachineStatus::Busy => self.busy,
            MachineStatus::Offline => self.offline,
        }
    }
}

/// The live machines of an organization (or of all), as a query to narrow further.
fn live(
    organization_id: Option<i64>,
) -> machines::BoxedQuery<'static, crate::db::DbConnectionBackend> {
    let query = machines::table
        .filter(machines::removed_at.is_null())
        .into_boxed();
    match organization_id {
        Some(id) => query.filter(machines::organization_id.eq(id)),
        None => query,
    }
}

/// A condition on a machine's columns, for a query of the machines table alone (`QS` =
/// `machines::table`) or of machines joined to their capabilities.
type Condition<QS> = Box<
    dyn BoxableExpression<QS, crate::db::DbConnectionBackend, SqlType = diesel::sql_types::Bool>,
>;

diesel::define_sql_function! {
    /// SQL `coalesce(condition, otherwise)`: a condition that may be NULL as one that is not.
    #[sql_name = "coalesce"]
    fn unless_null(
        condition: diesel::sql_types::Nullable<diesel::sql_types::Bool>,
        otherwise: diesel::sql_types::Bool,
    ) -> diesel::sql_types::Bool;
}

/// The status rule of [`MachineStatus::from_last_seen`], as a condition.
fn status_is<QS: 'static>(status: MachineStatus, cutoff: NaiveDateTime) -> Condition<QS>
where
    machines::last_seen_at: SelectableExpression<QS>,
    machines::current_run_id: SelectableExpression<QS>,
{
    let in_contact = unless_null(machines::last_seen_at.gt(cutoff), false);
    match status {
        MachineStatus::Online => Box::new(in_contact.and(machines::current_run_id.is_null())),
        MachineStatus::Busy => Box::new(in_contact.and(machines::current_run_id.is_not_null())),
        MachineStatus::Offline => Box::new(diesel::dsl::not(in_contact)),
    }
}

/// The filter's status and search, as conditions (its capability is where the query starts:
/// [`Passing`]).
fn narrowed_by<QS: 'static>(filter: &MachineFilter, cutoff: NaiveDateTime) -> Vec<Condition<QS>>
where
    machines::last_seen_at: SelectableExpression<QS>,
    machines::current_run_id: SelectableExpression<QS>,
    machines::name: SelectableExpression<QS>,
{
    let mut conditions = Vec::new();
    if let Some(status) = filter.status {
        conditions.push(status_is(status, cutoff));
    }
    let needle = filter.name_contains.trim();
    if !needle.is_empty() {
        let pattern = format!("%{}%", escape_like(&needle.to_lowercase()));
        conditions.push(Box::new(lower(machines::name).like(pattern).escape('\\')));
    }
    conditions
}

/// Live machines of an organization sharing a capability list, a run held or not, and contact since
/// the cutoff or not: how many. One grouped read of every organization's fleet ([`fleet::Fleet`]).
#[derive(QueryableByName)]
pub struct CensusGroup {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub organization_id: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub capabilities: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub busy: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub in_contact: i32,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub machines: i64,
}

/// On PostgreSQL, how many machine changes the triggers have counted (a sequence every replica
/// reads); on SQLite `None` (the one server hears of every change: [`crate::db::machine_changes`]).
pub fn changes_counted(conn: &mut DbConnection) -> QueryResult<Option<i64>> {
    match conn {
        DbConnection::Postgres(pg) => {
            diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                // Before its first use a sequence's last_value is its start, not yet returned.
                "CASE WHEN is_called THEN last_value ELSE 0 END FROM machine_changes",
            ))
            .get_result(pg)
            .map(Some)
        }
        DbConnection::Sqlite(_) => Ok(None),
    }
}

/// The status rule's inputs ([`MachineStatus::from_contact`]) for every live machine, grouped.
pub fn census(conn: &mut DbConnection, cutoff: NaiveDateTime) -> QueryResult<Vec<CensusGroup>> {
    const CENSUS: &str = "SELECT organization_id, capabilities, \
           CASE WHEN current_run_id IS NULL THEN 0 ELSE 1 END AS busy, \
           CASE WHEN last_seen_at > $1 THEN 1 ELSE 0 END AS in_contact, \
           COUNT(*) AS machines \
         FROM machines WHERE removed_at IS NULL \
         GROUP BY organization_id, capabilities, 3, 4";
    match conn {
        DbConnection::Postgres(pg) => statement(CENSUS)
            .bind::<diesel::sql_types::Timestamp, _>(cutoff)
            .load(pg),
        DbConnection::Sqlite(sqlite) => statement(CENSUS)
            .bind::<diesel::sql_types::Timestamp, _>(cutoff)
            .load(sqlite),
    }
}

diesel::define_sql_function! {
    /// SQL `lower()`, on both backends (`ilike` is PostgreSQL only).
    fn lower(text: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

/// What the VM Machines list shows: optionally one status, optionally names containing some text,
/// optionally only machines with one capability.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineFilter {
    pub status: Option<MachineStatus>,
    pub name_contains: String,
    /// Empty: any capabilities.
    pub capability: String,
}

impl MachineFilter {
    /// Whether the census's counts answer how many machines pass (no search).
    pub fn counted_by_census(&self) -> bool {
        self.name_contains.trim().is_empty()
    }
}

/// The machines that pass a filter, as the query to read from: without a capability, the
/// organization's live machines; with one, those holding it as kept in `machine_capabilities`, whose
/// index is in name order, so a page reads a page of rows however many machines hold it, or none.
enum Passing {
    Every(machines::BoxedQuery<'static, crate::db::DbConnectionBackend>),
    Holding(
        diesel::helper_types::IntoBoxed<
            'static,
            diesel::helper_types::InnerJoin<machine_capabilities::table, machines::table>,
            crate::db::DbConnectionBackend,
        >,
    ),
}

impl Passing {
    fn new(organization_id: i64, filter: &MachineFilter, cutoff: NaiveDateTime) -> Self {
        if filter.capability.is_empty() {
            Passing::Every(
                narrowed_by(filter, cutoff)
                    .into_iter()
                    .fold(live(Some(organization_id)), |query, condition| {
                        query.filter(condition)
                    }),
            )
        } else {
            let holding = machine_capabilities::table
                .inner_join(machines::table)
                .into_boxed()
                .filter(machine_capabilities::organization_id.eq(organization_id))
                .filter(machine_capabilities::capability.eq(filter.capability.clone()));
            Passing::Holding(
                narrowed_by(filter, cutoff)
                    .into_iter()
                    .fold(holding, |query, condition| query.filter(condition)),
            )
        }
    }
}

/// One page of machines that pass the filter, by name.
pub fn list(
    conn: &mut DbConnection,
    organization_id: i64,
    filter: &MachineFilter,
    now: NaiveDateTime,
    offline_after: chrono::Duration,
    offset: i64,
    limit: i64,
) -> QueryResult<Vec<Machine>> {
    match Passing::new(organization_id, filter, now - offline_after) {
        Passing::Every(query) => query
            .order((machines::name.asc(), machines::id.asc()))
            .offset(offset)
            .limit(limit)
            .select(Machine::as_select())
            .load(conn),
        Passing::Holding(query) => query
            .order((
                machine_capabilities::name.asc(),
                machine_capabilities::machine_id.asc(),
            ))
            .offset(offset)
            .limit(limit)
            .select(Machine::as_select())
            .load(conn),
    }
}

/// How many machines pass a filter with a search (without one, the census counts them:
/// [`fleet::OrgFleet::matching`]).
pub fn count_matching(
    conn: &mut DbConnection,
    organization_id: i64,
    filter: &MachineFilter,
    now: NaiveDateTime,
    offline_after: chrono::Duration,
) -> QueryResult<i64> {
    match Passing::new(organization_id, filter, now - offline_after) {
        Passing::Every(query) => query.count().get_result(conn),
        Passing::Holding(query) => query.count().get_result(conn),
    }
}

fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_checked_and_bounded() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let caps = vec![
            "windows".to_owned(),
            "chrome".to_owned(),
            "windows".to_owned(),
        ];
        let profile =
            MachineProfile::parse(" vm-01 ", "Windows 11", None, Some(ip), &caps, "1.2.0").unwrap();
        assert_eq!(profile.name, "vm-01");
        assert_eq!(
            profile.ip_address, "10.1.2.3",
            "taken from the request when not given"
        );
        assert_eq!(profile.capabilities, ["windows", "chrome"]);
        let given =
            MachineProfile::parse("vm", "", Some("192.168.0.9"), Some(ip), &[], "").unwrap();
        assert_eq!(given.ip_address, "192.168.0.9");
        for (typed, kept) in [
            (" 10.0.0.5:5000 ", "10.0.0.5:5000"),
            ("[fd00:0::5]:443", "[fd00::5]:443"),
        ] {
            let with_port =
                MachineProfile::parse("vm", "", Some(typed), Some(ip), &[], "").unwrap();
            assert_eq!(with_port.ip_address, kept);
        }
        for bad in ["10.0.0.5:99999", "10.0.0.5:", "host:80"] {
            assert!(
                MachineProfile::parse("vm", "", Some(bad), None, &[], "").is_err(),
                "{bad}"
            );
        }
        assert!(MachineProfile::parse("", "", None, None, &[], "").is_err());
        assert!(MachineProfile::parse(&"x".repeat(101), "", None, None, &[], "").is_err());
        assert!(MachineProfile::parse("vm", "", Some("not-an-ip"), None, &[], "").is_err());
        assert!(MachineProfile::parse("vm\u{7}", "", None, None, &[], "").is_err());
        assert!(MachineProfile::parse("vm", "", None, None, &["has space".into()], "").is_err());
        assert!(MachineProfile::parse("vm", "", None, None, &vec!["c".into(); 33], "").is_err());
        // Markup is just text: it is kept as typed and escaped when shown.
        assert!(
            MachineProfile::parse("<img src=x onerror=alert(1)>", "", None, None, &[], "").is_ok()
        );
    }

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(escape_like("50%_a\\b"), "50\\%\\_a\\\\b");
    }
}
