//! Usage of API keys without a database write per request: calls are tallied in memory and flushed
//! every second (and at shutdown) as last-used details per key, counts per key per hour, and who
//! called per key per hour (address, user agent, endpoint: what revoking the key would break).

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DurationRound, NaiveDateTime, TimeDelta};
use diesel::prelude::*;

use crate::db::schema::{api_key_callers, api_key_usage, api_keys};
use crate::db::{DbConnection, write_transaction};

/// How often a replica writes what it has tallied.
/// Also the most usage a crash (`kill -9`, power loss) can lose: calls counted since the last flush.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
const MAX_USER_AGENT_CHARS: usize = 200;
/// Distinct callers (address, user agent, endpoint) kept per key per hour; calls beyond them are
/// counted in the totals only. A key held by a handful of services has a handful.
pub const MAX_CALLERS_PER_HOUR: usize = 20;

/// Who made a successful call: where from, as what, to which endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Caller {
    pub ip_address: String,
    pub user_agent: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct LastUse {
    at: NaiveDateTime,
    ip: Option<String>,
    user_agent: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    success: i64,
    rejected: i64,
    limited: i64,
}

/// How a call with a live key was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx or 3xx.
    Succeeded,
    /// Any other error (404, 415, …): the caller's mistake.
    Refused,
    /// 429: over the key's rate limit, counted apart.
    Limited,
}

#[derive(Default)]
struct Tally {
    last_use: HashMap<i64, LastUse>,
    counts: HashMap<(i64, NaiveDateTime), Counts>,
    callers: HashMap<(i64, NaiveDateTime), HashMap<Caller, i64>>,
}

#[derive(Default)]
pub struct UsageRecorder {
    tally: Mutex<Tally>,
}

fn hour_of(at: NaiveDateTime) -> NaiveDateTime {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

impl UsageRecorder {
    /// A call made with a live key, counted by its outcome, and, when it succeeded, its last use and
    /// who made it to which endpoint (`invoice-sync`, `GET /api/me`).
    pub fn record(
        &self,
        key_id: i64,
        at: NaiveDateTime,
        ip: Option<String>,
        user_agent: Option<&str>,
        endpoint: Option<&str>,
        outcome: Outcome,
    ) {
        let succeeded = outcome == Outcome::Succeeded;
        let user_agent: Option<String> =
            user_agent.map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect());
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        let hour = hour_of(at);
        let counts = tally.counts.entry((key_id, hour)).or_default();
        match outcome {
            Outcome::Succeeded => counts.success += 1,
            Outcome::Refused => counts.rejected += 1,
            Outcome::Limited => counts.limited += 1,
        }
        if succeeded && let Some(endpoint) = endpoint {
            let caller = Caller {
                ip_address: ip.clone().unwrap_or_default(),
                user_agent: user_agent.clone().unwrap_or_default(),
                endpoint: endpoint.chars().take(MAX_USER_AGENT_CHARS).collect(),
            };
            let callers = tally.callers.entry((key_id, hour)).or_default();
            if let Some(calls) = callers.get_mut(&caller) {
                *calls += 1;
            } else if callers.len() < MAX_CALLERS_PER_HOUR {
                callers.insert(caller, 1);
            }
        }
        // "Last used" is the last call that worked: what an error answer says is the caller's mistake.
        let newer = tally.last_use.get(&key_id).is_none_or(|last| last.at <= at);
        if succeeded && newer {
            tally
                .last_use
                .insert(key_id, LastUse { at, ip, user_agent });
        }
    }

    /// A refused call with a key we know (revoked or expired): counted, but it is not "use".
    pub fn record_rejected(&self, key_id: i64, at: NaiveDateTime) {
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        tally
            .counts
            .entry((key_id, hour_of(at)))
            .or_default()
            .rejected += 1;
    }

    /// Writes everything tallied so far. On failure the tally is kept for the next flush.
    pub fn flush(&self, conn: &mut DbConnection) -> QueryResult<()> {
        let taken = std::mem::take(&mut *self.tally.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.last_use.is_empty() && taken.counts.is_empty() && taken.callers.is_empty() {
            return Ok(());
        }
        let written = write_transaction(conn, |conn| {
            for (key_id, last) in &taken.last_use {
                write_last_use(conn, *key_id, last)?;
            }
            for ((key_id, hour), counts) in &taken.counts {
                add_counts(conn, *key_id, *hour, *counts)?;
            }
            for ((key_id, hour), callers) in &taken.callers {
                for (caller, calls) in callers {
                    add_caller(conn, *key_id, *hour, caller, *calls)?;
                }
            }
            Ok(())
        });
        if written.is_err() {
            self.merge_back(taken);
        }
        written
    }

    fn merge_back(&self, taken: Tally) {
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        for (key_id, last) in taken.last_use {
            let newer = tally
                .last_use
                .get(&key_id)
                .is_none_or(|current| current.at <= last.at);
            if newer {
                tally.last_use.insert(key_id, last);
            }
        }
        for (slot, counts) in taken.counts {
            let entry = tally.counts.entry(slot).or_default();
            entry.success += counts.success;
            entry.rejected += counts.rejected;
        }
        for (slot, callers) in taken.callers {
            let entry = tally.callers.entry(slot).or_default();
            for (caller, calls) in callers {
                *entry.entry(caller).or_default() += calls;
            }
        }
    }
}

/// Keeps the newest use when several replicas flush the same key.
fn write_last_use(conn: &mut DbConnection, key_id: i64, last: &LastUse) -> QueryResult<()> {
    diesel::update(api_keys::table.find(key_id))
        .filter(
            api_keys::last_used_at
                .is_null()
                .or(api_keys::last_used_at.lt(last.at)),
        )
        .set((
            api_keys::last_used_at.eq(last.at),
            api_keys::last_used_ip.eq(&last.ip),
            api_keys::last_used_user_agent.eq(&last.user_agent),
        ))
        .execute(conn)?;
    Ok(())
}

/// Adds to the hour's counts. Upserts do not go through `MultiConnection`, so the one statement is
/// executed on whichever backend this is.
fn add_counts(
    conn: &mut DbConnection,
    key_id: i64,
    hour: NaiveDateTime,
    counts: Counts,
) -> QueryResult<()> {
    use api_key_usage::dsl as u;
    macro_rules! upsert {
        ($conn:expr) => {
            diesel::insert_into(u::api_key_usage)
                .values((
                    u::api_key_id.eq(key_id),
                    u::hour_start.eq(hour),
                    u::success_count.eq(counts.success),
                    u::rejected_count.eq(counts.rejected),
                    u::limited_count.eq(counts.limited),
                ))
                .on_conflict((u::api_key_id, u::hour_start))
                .do_update()
                .set((
                    u::success_count.eq(u::success_count + counts.success),
                    u::rejected_count.eq(u::rejected_count + counts.rejected),
                    u::limited_count.eq(u::limited_count + counts.limited),
                ))
                .execute($conn)
        };
    }
    match conn {
        DbConnection::Sqlite(conn) => upsert!(conn)?,
        DbConnection::Postgres(conn) => upsert!(conn)?,
    };
    Ok(())
}

/// Adds to the hour's calls of one caller (one statement on whichever backend this is, as above).
fn add_caller(
    conn: &mut DbConnection,
    key_id: i64,
    hour: NaiveDateTime,
    caller: &Caller,
    calls: i64,
) -> QueryResult<()> {
    use api_key_callers::dsl as c;
    macro_rules! upsert {
        ($conn:expr) => {
            diesel::insert_into(c::api_key_callers)
                .values((
                    c::api_key_id.eq(key_id),
                    c::hour_start.eq(hour),
                    c::ip_address.eq(&caller.ip_address),
                    c::user_agent.eq(&caller.user_agent),
                    c::endpoint.eq(&caller.endpoint),
                    c::calls.eq(calls),
                ))
                .on_conflict((
                    c::api_key_id,
                    c::hour_start,
                    c::ip_address,
                    c::user_agent,
                    c::endpoint,
                ))
                .do_update()
                .set(c::calls.eq(c::calls + calls))
                .execute($conn)
        };
    }
    match conn {
        DbConnection::Sqlite(conn) => upsert!(conn)?,
        DbConnection::Postgres(conn) => upsert!(conn)?,
    };
    Ok(())
}

/// What revoking a key would break: its successful calls of the last 24 hours, who made them and to
/// which endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecentUse {
    pub calls: i64,
    /// Distinct (address, user agent) pairs, busiest first.
    pub clients: Vec<(String, String)>,
    /// Endpoints called, busiest first.
    pub endpoints: Vec<String>,
}

/// [`RecentUse`] of each of `key_ids` that was used in the 24 hours before `now`: two indexed reads
/// of at most 24 hours of rows per key.
pub fn recent_use(
    conn: &mut DbConnection,
    key_ids: &[i64],
    now: NaiveDateTime,
) -> QueryResult<HashMap<i64, RecentUse>> {
    let since = hour_of(now) - TimeDelta::hours(23);
    let totals: Vec<(i64, i64)> = api_key_usage::table
        .filter(api_key_usage::api_key_id.eq_any(key_ids))
        .filter(api_key_usage::hour_start.ge(since))
        .select((api_key_usage::api_key_id, api_key_usage::success_count))
        .load(conn)?;
    let callers: Vec<(i64, String, String, String, i64)> = api_key_callers::table
        .filter(api_key_callers::api_key_id.eq_any(key_ids))
        .filter(api_key_callers::hour_start.ge(since))
        .select((
            api_key_callers::api_key_id,
            api_key_callers::ip_address,
            api_key_callers::user_agent,
            api_key_callers::endpoint,
            api_key_callers::calls,
        ))
        .load(conn)?;
    let mut found: HashMap<i64, RecentUse> = HashMap::new();
    for (key_id, calls) in totals {
        if calls > 0 {
            found.entry(key_id).or_default().calls += calls;
        }
    }
    let mut by_client: HashMap<i64, HashMap<(String, String), i64>> = HashMap::new();
    let mut by_endpoint: HashMap<i64, HashMap<String, i64>> = HashMap::new();
    for (key_id, ip, agent, endpoint, calls) in callers {
        *by_client
            .entry(key_id)
            .or_default()
            .entry((ip, agent))
            .or_default() += calls;
        *by_endpoint
            .entry(key_id)
            .or_default()
            .entry(endpoint)
            .or_default() += calls;
    }
    for (key_id, recent) in found.iter_mut() {
        recent.clients = busiest_first(by_client.remove(key_id).unwrap_or_default());
        recent.endpoints = busiest_first(by_endpoint.remove(key_id).unwrap_or_default());
    }
    Ok(found)
}

fn busiest_first<T: Ord>(counted: HashMap<T, i64>) -> Vec<T> {
    let mut all: Vec<(T, i64)> = counted.into_iter().collect();
    all.sort_by(|(a, x), (b, y)| y.cmp(x).then_with(|| a.cmp(b)));
    all.into_iter().map(|(item, _)| item).collect()
}

/// Requests of one key in one time bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub start: NaiveDateTime,
    pub success: i64,
    pub rejected: i64,
    /// Refused for being over the key's rate limit.
    pub limited: i64,
}

/// Requests per hour for the 24 hours ending with the current hour, oldest first, empty hours included.
pub fn hourly(
    conn: &mut DbConnection,
    key_id: i64,
    now: NaiveDateTime,
) -> QueryResult<Vec<Bucket>> {
    let last = hour_of(now);
    let first = last - TimeDelta::hours(23);
    let rows = load(conn, key_id, first)?;
    Ok((0..24)
        .map(|i| {
            let start = first + TimeDelta::hours(i);
            let (success, rejected, limited) = rows.get(&start).copied().unwrap_or_default();
            Bucket {
                start,
                success,
                rejected,
                limited,
            }
        })
        .collect())
}

/// Requests per day (UTC) for the 7 days ending today, oldest first, empty days included.
pub fn daily(conn: &mut DbConnection, key_id: i64, now: NaiveDateTime) -> QueryResult<Vec<Bucket>> {
    let today = now.date().and_hms_opt(0, 0, 0).expect("midnight exists");
    let first = today - TimeDelta::days(6);
    let rows = load(conn, key_id, first)?;
    let mut days: Vec<Bucket> = (0..7)
        .map(|i| Bucket {
            start: first + TimeDelta::days(i),
            success: 0,
            rejected: 0,
            limited: 0,
        })
        .collect();
    for (hour, (success, rejected, limited)) in rows {
        let index = (hour - first).num_days();
        if let Some(day) = usize::try_from(index).ok().and_then(|i| days.get_mut(i)) {
            day.success += success;
            day.rejected += rejected;
            day.limited += limited;
        }
    }
    Ok(days)
}

fn load(
    conn: &mut DbConnection,
    key_id: i64,
    since: NaiveDateTime,
) -> QueryResult<HashMap<NaiveDateTime, (i64, i64, i64)>> {
    let rows: Vec<(NaiveDateTime, i64, i64, i64)> = api_key_usage::table
        .filter(api_key_usage::api_key_id.eq(key_id))
        .filter(api_key_usage::hour_start.ge(since))
        .select((
            api_key_usage::hour_start,
            api_key_usage::success_count,
            api_key_usage::rejected_count,
            api_key_usage::limited_count,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(hour, s, r, l)| (hour, (s, r, l)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u32, m: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2026, 11, 28)
            .unwrap()
            .and_hms_opt(h, m, 7)
            .unwrap()
    }

    #[test]
    fn tallies_by_hour_and_keeps_the_newest_use() {
        let recorder = UsageRecorder::default();
        recorder.record(
            1,
            at(10, 5),
            Some("10.0.0.1".into()),
            Some("curl/8"),
            None,
            Outcome::Succeeded,
        );
        recorder.record(
            1,
            at(10, 50),
            Some("10.0.0.2".into()),
            Some("curl/9"),
            None,
            Outcome::Succeeded,
        );
        recorder.record(
            1,
            at(10, 20),
            Some("10.0.0.3".into()),
            None,
            None,
            Outcome::Succeeded,
        );
        recorder.record_rejected(1, at(11, 1));
        let tally = recorder.tally.lock().unwrap();
        assert_eq!(
            tally.counts[&(1, at(10, 0) - TimeDelta::seconds(7))],
            Counts {
                success: 3,
                rejected: 0,
                limited: 0
            }
        );
        assert_eq!(
            tally.counts[&(1, at(11, 0) - TimeDelta::seconds(7))],
            Counts {
                success: 0,
                rejected: 1,
                limited: 0
            }
        );
        assert_eq!(tally.last_use[&1].ip.as_deref(), Some("10.0.0.2"));
    }

    #[test]
    fn merge_back_keeps_counts_of_a_failed_flush() {
        let recorder = UsageRecorder::default();
        recorder.record(1, at(10, 5), None, None, None, Outcome::Succeeded);
        let taken = std::mem::take(&mut *recorder.tally.lock().unwrap());
        recorder.record(1, at(10, 6), None, None, None, Outcome::Succeeded);
        recorder.merge_back(taken);
        let tally = recorder.tally.lock().unwrap();
        assert_eq!(tally.counts.values().map(|c| c.success).sum::<i64>(), 2);
        assert_eq!(tally.last_use[&1].at, at(10, 6));
    }
}
