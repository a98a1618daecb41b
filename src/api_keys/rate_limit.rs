//! Per-key rate limits of the public API: at most `limit` calls per key in each fixed window (a
//! minute, aligned to the clock), shared by every replica of one database.
//!
//! The count of a window lives in `api_key_rate_windows`, but a call does not write it: each server
//! leases permits from it in chunks (an upsert that adds the chunk and returns the new total) and
//! spends them in memory. A chunk is a sixteenth of what is left, at least one, so far from the limit
//! a key costs a handful of writes a minute, and near it every permit is leased on its own. Leases
//! never exceed the limit in total, so replicas together admit at most `limit` calls a window; what
//! they can fall short by is the permits one server leased and did not spend (less than a sixteenth
//! of the limit each).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::BigInt;

use crate::db::statement::statement;
use crate::db::{DbConnection, DbError, Pool};

/// What a call learns about its key's limit: the values of the `X-RateLimit-*` headers, and whether it
/// may proceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowance {
    pub allowed: bool,
    /// Calls a window (`X-RateLimit-Limit`).
    pub limit: i64,
    /// Calls left in this window after this one (`X-RateLimit-Remaining`).
    pub remaining: i64,
    /// When the window ends, in unix seconds (`X-RateLimit-Reset`).
    pub reset: i64,
    /// Seconds until then, at least 1 (`Retry-After` when refused).
    pub retry_after: i64,
}

/// A key's limit: the server's default unless the key has its own; 0 is unlimited.
pub fn limit_of(own: Option<i64>, default: i64) -> i64 {
    own.unwrap_or(default)
}

/// The highest limit an admin may set on a key.
pub const MAX_LIMIT: i64 = 1_000_000_000;

pub struct RateLimiter {
    pool: Pool,
    window_secs: i64,
    windows: Mutex<HashMap<i64, Window>>,
}

/// What this server knows about a key's current window.
#[derive(Debug)]
struct Window {
    start: i64,
    limit: i64,
    /// Leased and not yet spent.
    permits: i64,
    /// The window's total across every server, as of this server's latest lease.
    leased_total: i64,
    /// A lease came back empty: the limit is reached until the window ends.
    exhausted: bool,
}

impl Window {
    fn new(start: i64, limit: i64) -> Self {
        Self {
            start,
            limit,
            permits: 0,
            leased_total: 0,
            exhausted: false,
        }
    }

    /// Spends a leased permit, if one is left.
    fn spend(&mut self) -> Option<i64> {
        if self.permits == 0 {
            return None;
        }
        self.permits -= 1;
        Some(self.remaining())
    }

    fn remaining(&self) -> i64 {
        (self.limit - self.leased_total).max(0) + self.permits
    }

    /// How many permits to ask for next.
    fn chunk(&self) -> i64 {
        ((self.limit - self.leased_total) / 16).max(1)
    }

    fn granted(&mut self, asked: i64, total: i64) {
        // The total before this lease was `total - asked`; what fits under the limit is granted.
        let granted = (self.limit - (total - asked)).clamp(0, asked);
        self.leased_total = self.leased_total.max(total);
        self.permits += granted;
        if granted == 0 {
            self.exhausted = true;
        }
    }
}

impl RateLimiter {
    pub fn new(pool: Pool, window: Duration) -> Self {
        Self {
            pool,
            window_secs: (window.as_secs() as i64).max(1),
            windows: Mutex::default(),
        }
    }

    /// Counts a call of `key_id` against `limit` calls a window. `None` when the key is unlimited
    /// (`limit` 0): no headers, no counting.
    pub async fn check(&self, key_id: i64, limit: i64) -> Result<Option<Allowance>, DbError> {
        if limit <= 0 {
            return Ok(None);
        }
        let now = chrono::Utc::now().timestamp();
        let start = now - now.rem_euclid(self.window_secs);
        let reset = start + self.window_secs;
        let allowance = |allowed: bool, remaining: i64| Allowance {
            allowed,
            limit,
            remaining,
            reset,
            retry_after: (reset - now).max(1),
        };
        let asked = {
            let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            let window = windows
                .entry(key_id)
                .or_insert_with(|| Window::new(start, limit));
            if window.start != start || window.limit != limit {
                *window = Window::new(start, limit);
            }
            if let Some(remaining) = window.spend() {
                return Ok(Some(allowance(true, remaining)));
            }
            if window.exhausted {
                return Ok(Some(allowance(false, 0)));
            }
            window.chunk()
        };
        let total = self
            .pool
            .run(move |conn| lease(conn, key_id, start, asked))
            .await?;
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let window = windows
            .entry(key_id)
            .or_insert_with(|| Window::new(start, limit));
        if window.start != start || window.limit != limit {
            // The window turned (or the limit changed) while the lease was out: this call counted in
            // the window it was leased for.
            return Ok(Some(allowance(true, (limit - total).max(0))));
        }
        window.granted(asked, total);
        Ok(Some(match window.spend() {
            Some(remaining) => allowance(true, remaining),
            None => allowance(false, 0),
        }))
    }
}

/// Adds `asked` to the window's total and returns the new total: one statement, atomic on both
/// backends, so concurrent leases (of any replica) each see their own total.
fn lease(conn: &mut DbConnection, key_id: i64, start: i64, asked: i64) -> Result<i64, DbError> {
    #[derive(QueryableByName)]
    struct Total {
        #[diesel(sql_type = BigInt)]
        used: i64,
    }
    const LEASE: &str = "INSERT INTO api_key_rate_windows (api_key_id, window_start, used) \
         VALUES ($1, $2, $3) \
         ON CONFLICT (api_key_id, window_start) \
         DO UPDATE SET used = api_key_rate_windows.used + excluded.used \
         RETURNING used";
    let query = statement(LEASE)
        .bind::<BigInt, _>(key_id)
        .bind::<BigInt, _>(start)
        .bind::<BigInt, _>(asked);
    let total = match conn {
        DbConnection::Sqlite(c) => query.get_result::<Total>(c)?,
        DbConnection::Postgres(c) => query.get_result::<Total>(c)?,
    };
    Ok(total.used)
}

/// Forgets windows that ended before `before` (unix seconds): run with the other clean-ups.
pub fn forget_windows(conn: &mut DbConnection, before: i64) -> QueryResult<usize> {
    use crate::db::schema::api_key_rate_windows as w;
    diesel::delete(w::table.filter(w::window_start.lt(before))).execute(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_shrink_near_the_limit_and_never_exceed_it() {
        let mut window = Window::new(0, 100);
        assert_eq!(window.chunk(), 6);
        // Another server leased 96 first: of the 6 asked, 4 fit.
        window.granted(6, 102);
        assert_eq!((window.permits, window.leased_total), (4, 102));
        assert_eq!(window.remaining(), 4);
        for left in (0..4).rev() {
            assert_eq!(window.spend(), Some(left));
        }
        assert_eq!(window.spend(), None);
        assert_eq!(window.chunk(), 1);
        window.granted(1, 101);
        assert!(window.exhausted);
        assert_eq!(window.remaining(), 0);
    }

    #[test]
    fn a_key_without_its_own_limit_has_the_default() {
        assert_eq!(limit_of(None, 600), 600);
        assert_eq!(limit_of(Some(5), 600), 5);
        assert_eq!(limit_of(Some(0), 600), 0);
    }
}
