//! Dashboard sessions, kept on the server. The browser holds a random session id (inside the session
//! cookie); the database holds only its SHA-256, with the user, when it began, when it was last used,
//! and the address and browser it came from. So a copy of the database opens no session, signing out
//! ends the session for every copy of the cookie, and a user's sessions can be listed and ended.
//!
//! A session ends when it is signed out, idle longer than `GRANITE_SESSION_IDLE_MINUTES`, older than
//! `GRANITE_SESSION_MAX_HOURS` however busy, or when its user's password changes or the user is removed.

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::schema::{organizations, sessions, users};
use crate::organizations::Organization;
use crate::secret::{random_base62, sha256_hex};
use crate::users::User;

/// Characters of a session id: 43 base62 digits, about 256 bits.
const ID_CHARS: usize = 43;
/// The most of a browser's User-Agent kept: enough to tell browsers apart in the sessions list.
const USER_AGENT_CHARS: usize = 200;
/// `last_seen_at` is written at most this often per session: a write per request would cost more
/// than it tells.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// How long sessions last: idle, and at most.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    pub idle: Duration,
    pub max: Duration,
}

impl Lifetimes {
    /// Sessions last used before this have been idle too long.
    fn idle_cutoff(&self, now: NaiveDateTime) -> NaiveDateTime {
        now - chrono::Duration::from_std(self.idle).unwrap_or(chrono::Duration::MAX)
    }

    /// Sessions begun before this are over, however busy.
    fn created_cutoff(&self, now: NaiveDateTime) -> NaiveDateTime {
        now - chrono::Duration::from_std(self.max).unwrap_or(chrono::Duration::MAX)
    }

    /// How often `last_seen_at` is refreshed: once a minute, or four times per idle limit if that
    /// is shorter, so an active session never looks idle.
    fn touch_every(&self) -> chrono::Duration {
        chrono::Duration::from_std(TOUCH_EVERY.min(self.idle / 4)).unwrap_or_default()
    }
}

/// The secret the browser holds. Never stored, never logged.
pub struct SessionId(String);

impl SessionId {
    fn generate() -> Self {
        Self(random_base62(ID_CHARS))
    }

    /// What the cookie carried; anything malformed is simply no session.
    pub fn from_cookie(text: String) -> Option<Self> {
        (text.len() == ID_CHARS && text.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then_some(Self(text))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    fn hash(&self) -> String {
        sha256_hex(&self.0)
    }
}

/// Where a session was opened from, as the sessions list shows it.
pub struct Origin<'a> {
    pub ip_address: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = sessions)]
pub struct Session {
    pub id: i64,
    pub user_id: i64,
    pub created_at: NaiveDateTime,
    pub last_seen_at: NaiveDateTime,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

/// Opens a session for `user_id` and returns the id to give the browser. Sessions that have ended
/// by age are deleted on the way (there are no more of them than sign-ins since the last time).
pub fn start(
    conn: &mut DbConnection,
    user_id: i64,
    origin: Origin<'_>,
    lifetimes: Lifetimes,
    now: NaiveDateTime,
) -> QueryResult<SessionId> {
    delete_ended(conn, lifetimes, now)?;
    let id = SessionId::generate();
    let user_agent = origin.user_agent.map(|agent| {
        agent
            .chars()
            .filter(|c| !c.is_control())
            .take(USER_AGENT_CHARS)
            .collect::<String>()
    });
    diesel::insert_into(sessions::table)
        .values((
            sessions::token_hash.eq(id.hash()),
            sessions::user_id.eq(user_id),
            sessions::created_at.eq(now),
            sessions::last_seen_at.eq(now),
            sessions::ip_address.eq(origin.ip_address),
            sessions::user_agent.eq(user_agent),
        ))
        .execute(conn)?;
    Ok(id)
}

/// The live session `id` names, with its user and organization; `None` when it never existed, was
/// ended, or is too idle or too old. Refreshes its last use when that is more than a minute old.
pub fn find_active(
    conn: &mut DbConnection,
    id: &SessionId,
    lifetimes: Lifetimes,
    now: NaiveDateTime,
) -> QueryResult<Option<(Session, User, Organization)>> {
    let found = sessions::table
        .inner_join(users::table.inner_join(organizations::table))
        .filter(sessions::token_hash.eq(id.hash()))
        .filter(sessions::last_seen_at.gt(lifetimes.idle_cutoff(now)))
        .filter(sessions::created_at.gt(lifetimes.created_cutoff(now)))
        .select((
            Session::as_select(),
            User::as_select(),
            Organization::as_select(),
        ))
        .first::<(Session, User, Organization)>(conn)
        .optional()?;
    if let Some((session, _, _)) = &found
        && now - session.last_seen_at >= lifetimes.touch_every()
    {
        diesel::update(sessions::table.find(session.id))
            .set(sessions::last_seen_at.eq(now))
            .execute(conn)?;
    }
    Ok(found)
}

/// Ends the session `id` names (sign-out). Ending one already gone is not an error.
pub fn end(conn: &mut DbConnection, id: &SessionId) -> QueryResult<()> {
    diesel::delete(sessions::table.filter(sessions::token_hash.eq(id.hash()))).execute(conn)?;
    Ok(())
}

/// Ends every session of `user_id` but `keep` ("sign out other sessions", a password change made
/// from this one). Returns how many ended.
pub fn end_others(conn: &mut DbConnection, user_id: i64, keep: i64) -> QueryResult<usize> {
    diesel::delete(
        sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::id.ne(keep)),
    )
    .execute(conn)
}

/// Ends session `id` if it is one of `user_id`'s; whether it was.
pub fn end_one(conn: &mut DbConnection, user_id: i64, id: i64) -> QueryResult<bool> {
    let ended = diesel::delete(
        sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::id.eq(id)),
    )
    .execute(conn)?;
    Ok(ended > 0)
}

/// Ends every session of `user_id` (password reset from the shell, user removed).
pub fn end_all(conn: &mut DbConnection, user_id: i64) -> QueryResult<usize> {
    diesel::delete(sessions::table.filter(sessions::user_id.eq(user_id))).execute(conn)
}

/// The live sessions of `user_id`, most recently used first.
pub fn of_user(
    conn: &mut DbConnection,
    user_id: i64,
    lifetimes: Lifetimes,
    now: NaiveDateTime,
) -> QueryResult<Vec<Session>> {
    sessions::table
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::last_seen_at.gt(lifetimes.idle_cutoff(now)))
        .filter(sessions::created_at.gt(lifetimes.created_cutoff(now)))
        .order((sessions::last_seen_at.desc(), sessions::id.desc()))
        .select(Session::as_select())
        .load(conn)
}

/// Deletes sessions that have ended by age.
pub fn delete_ended(
    conn: &mut DbConnection,
    lifetimes: Lifetimes,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::delete(
        sessions::table.filter(
            sessions::last_seen_at
                .le(lifetimes.idle_cutoff(now))
                .or(sessions::created_at.le(lifetimes.created_cutoff(now))),
        ),
    )
    .execute(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_long_random_and_checked() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_eq!(a.expose().len(), ID_CHARS);
        assert_ne!(a.expose(), b.expose());
        assert!(SessionId::from_cookie(a.expose().to_owned()).is_some());
        assert!(SessionId::from_cookie("short".into()).is_none());
        assert!(SessionId::from_cookie(format!("{}\0", &a.expose()[1..])).is_none());
        assert_ne!(a.hash(), a.expose(), "only the hash is stored");
    }

    #[test]
    fn an_active_session_is_refreshed_well_within_the_idle_limit() {
        let short = Lifetimes {
            idle: Duration::from_secs(8),
            max: Duration::from_secs(3600),
        };
        assert_eq!(short.touch_every(), chrono::Duration::seconds(2));
        let long = Lifetimes {
            idle: Duration::from_secs(7200),
            max: Duration::from_secs(3600),
        };
        assert_eq!(long.touch_every(), chrono::Duration::seconds(60));
    }
}
