//! The recorded events read back: an organization's events newest first, a page at a time by keyset
//! (`id < before`), filtered by action and by actor. Each way of filtering is one fixed statement
//! served by one index of the `audit_log` migration, in index order: a page deep in a year of events
//! costs what the first page costs (no OFFSET, no sort).

use chrono::NaiveDateTime;
use diesel::QueryResult;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};

use super::Action;
use crate::db::DbConnection;
use crate::db::statement::statement;

/// Events on one page of the audit log.
pub const PAGE_SIZE: i64 = 50;
/// Events read per round trip by a download.
pub const BATCH_SIZE: i64 = 500;
/// Actors the filter offers at most (each found by one index seek).
pub const ACTORS_LISTED: i64 = 100;
/// The longest actor a filter may name (an email is at most 254 characters; a machine label a bit
/// more).
const ACTOR_MAX_CHARS: usize = 320;

/// An actor to filter by, exactly as recorded ("admin@example.com", "machine vm-1").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActorName(String);

impl ActorName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which events to show: all of them, or those of one action, one actor, or both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub action: Option<Action>,
    pub actor: Option<ActorName>,
}

/// Why a filter from a link or form was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("There is no action “{0}” in the audit log. Choose one from the list.")]
    UnknownAction(String),
    #[error("The actor must not contain control characters.")]
    ActorNotText,
    #[error("The actor is longer than any recorded actor ({ACTOR_MAX_CHARS} characters at most).")]
    ActorTooLong,
    #[error("“before” must be the number of an event.")]
    BadCursor,
}

impl Filter {
    /// The filter of a query string's `action` and `actor`; empty values mean "any".
    pub fn parse(action: &str, actor: &str) -> Result<Self, FilterError> {
        let action = match action.trim() {
            "" => None,
            text => {
                Some(Action::parse(text).ok_or_else(|| FilterError::UnknownAction(shorten(text)))?)
            }
        };
        let actor = match actor.trim() {
            "" => None,
            _ if actor.chars().any(char::is_control) => return Err(FilterError::ActorNotText),
            _ if actor.chars().count() > ACTOR_MAX_CHARS => return Err(FilterError::ActorTooLong),
            text => Some(ActorName(text.to_owned())),
        };
        Ok(Self { action, actor })
    }

    pub fn is_empty(&self) -> bool {
        self.action.is_none() && self.actor.is_none()
    }

    /// The query string of this filter (`action=…&actor=…`, empty parts left out), for links.
    pub fn query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(action) = self.action {
            query.append_pair("action", action.as_str());
        }
        if let Some(actor) = &self.actor {
            query.append_pair("actor", actor.as_str());
        }
        query.finish()
    }

    /// The statement text for this filter: `$1` organization, `$2` before, `$3` limit, `$4` action,
    /// `$5` actor (a text leaves out the binds it does not use). Public so that tests and benchmarks
    /// can ask the databases how they run it.
    pub fn page_sql(&self) -> &'static str {
        match (self.action.is_some(), self.actor.is_some()) {
            (false, false) => concat!(
                "SELECT id, actor, action, target_type, target_id, source_ip, details, created_at ",
                "FROM audit_events WHERE organization_id = $1 AND id < $2 ",
                "ORDER BY id DESC LIMIT $3"
            ),
            (true, false) => concat!(
                "SELECT id, actor, action, target_type, target_id, source_ip, details, created_at ",
                "FROM audit_events WHERE organization_id = $1 AND action = $4 AND id < $2 ",
                "ORDER BY id DESC LIMIT $3"
            ),
            (false, true) => concat!(
                "SELECT id, actor, action, target_type, target_id, source_ip, details, created_at ",
                "FROM audit_events WHERE organization_id = $1 AND actor = $5 AND id < $2 ",
                "ORDER BY id DESC LIMIT $3"
            ),
            (true, true) => concat!(
                "SELECT id, actor, action, target_type, target_id, source_ip, details, created_at ",
                "FROM audit_events WHERE organization_id = $1 AND action = $4 AND actor = $5 ",
                "AND id < $2 ORDER BY id DESC LIMIT $3"
            ),
        }
    }
}

/// A value from a link, cut short for an error message.
fn shorten(text: &str) -> String {
    let mut short: String = text.chars().filter(|c| !c.is_control()).take(60).collect();
    if text.chars().count() > 60 {
        short.push('…');
    }
    short
}

/// The position of a page: events older than this id. Empty is the newest page; a number beyond any
/// id (however long) is the newest page too.
pub fn parse_before(text: &str) -> Result<Option<i64>, FilterError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FilterError::BadCursor);
    }
    Ok(Some(text.parse().unwrap_or(i64::MAX)))
}

/// One event as it was recorded. `action` is the stored text: a row written by another version may
/// hold one this version does not know ([`Action::parse`] says).
#[derive(Clone, Debug, QueryableByName)]
pub struct RecordedEvent {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub actor: String,
    #[diesel(sql_type = Text)]
    pub action: String,
    #[diesel(sql_type = Text)]
    pub target_type: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub target_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub source_ip: Option<String>,
    /// JSON text.
    #[diesel(sql_type = Text)]
    pub details: String,
    #[diesel(sql_type = Timestamp)]
    pub created_at: NaiveDateTime,
}

/// An event as a download writes it, one JSON object per line. The details are the JSON recorded
/// with the event, which never holds a secret (only names, hints and ids: see the callers of
/// [`super::record`]).
#[derive(Debug, serde::Serialize)]
pub struct ExportedEvent<'a> {
    pub id: i64,
    /// RFC 3339, UTC.
    pub time: String,
    pub actor: &'a str,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub details: serde_json::Value,
}

impl RecordedEvent {
    pub fn export(&self) -> ExportedEvent<'_> {
        ExportedEvent {
            id: self.id,
            time: self
                .created_at
                .and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            actor: &self.actor,
            action: &self.action,
            target_type: &self.target_type,
            target_id: self.target_id.as_deref(),
            ip: self.source_ip.as_deref(),
            // Written by `record` from a JSON value; should a row hold something else, it is kept as
            // text rather than lost.
            details: serde_json::from_str(&self.details)
                .unwrap_or_else(|_| serde_json::Value::String(self.details.clone())),
        }
    }
}

/// Up to `limit` events of the organization passing `filter`, older than `before`, newest first.
pub fn events(
    conn: &mut DbConnection,
    organization_id: i64,
    filter: &Filter,
    before: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<RecordedEvent>> {
    let (action, actor) = (
        filter.action.map(Action::as_str).unwrap_or_default(),
        filter
            .actor
            .as_ref()
            .map(ActorName::as_str)
            .unwrap_or_default(),
    );
    let query = statement(filter.page_sql())
        .bind::<BigInt, _>(organization_id)
        .bind::<BigInt, _>(before.unwrap_or(i64::MAX))
        .bind::<BigInt, _>(limit)
        .bind::<Text, _>(action)
        .bind::<Text, _>(actor);
    match conn {
        DbConnection::Postgres(pg) => query.load(pg),
        DbConnection::Sqlite(sqlite) => query.load(sqlite),
    }
}

/// One page of the audit log, and where the next (older) one starts if there is one.
pub struct Page {
    pub events: Vec<RecordedEvent>,
    /// The `before` of the next page: the id of this page's last event, when older ones match.
    pub older: Option<i64>,
}

/// A page of [`PAGE_SIZE`] events: one more is read to know whether an older page exists.
pub fn page(
    conn: &mut DbConnection,
    organization_id: i64,
    filter: &Filter,
    before: Option<i64>,
) -> QueryResult<Page> {
    let mut events = events(conn, organization_id, filter, before, PAGE_SIZE + 1)?;
    let older = if events.len() as i64 > PAGE_SIZE {
        events.truncate(PAGE_SIZE as usize);
        events.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Page { events, older })
}

#[derive(QueryableByName)]
struct SeenActor {
    #[diesel(sql_type = Text)]
    actor: String,
}

/// The distinct actors of the organization's events, in order, at most `limit`: one index seek each
/// (the next actor after the last one found), so a year of events costs no more than a week.
pub fn actors(
    conn: &mut DbConnection,
    organization_id: i64,
    limit: i64,
) -> QueryResult<Vec<String>> {
    const ACTORS: &str = "WITH RECURSIVE seen(actor, n) AS ( \
           SELECT MIN(actor), 1 FROM audit_events WHERE organization_id = $1 \
           UNION ALL \
           SELECT (SELECT MIN(later.actor) FROM audit_events later \
                   WHERE later.organization_id = $1 AND later.actor > seen.actor), seen.n + 1 \
           FROM seen WHERE seen.actor IS NOT NULL AND seen.n < $2 \
         ) \
         SELECT actor FROM seen WHERE actor IS NOT NULL";
    let query = statement(ACTORS)
        .bind::<BigInt, _>(organization_id)
        .bind::<BigInt, _>(limit);
    let seen: Vec<SeenActor> = match conn {
        DbConnection::Postgres(pg) => query.load(pg),
        DbConnection::Sqlite(sqlite) => query.load(sqlite),
    }?;
    Ok(seen.into_iter().map(|s| s.actor).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_reads_from_the_query_string() {
        assert_eq!(Filter::parse("", "").unwrap(), Filter::default());
        let filter = Filter::parse("api_key_revoked", " admin@example.com ").unwrap();
        assert_eq!(filter.action, Some(Action::ApiKeyRevoked));
        assert_eq!(filter.actor.unwrap().as_str(), "admin@example.com");
        assert_eq!(
            Filter::parse("drop_tables", ""),
            Err(FilterError::UnknownAction("drop_tables".into()))
        );
        assert_eq!(Filter::parse("", "a\0b"), Err(FilterError::ActorNotText));
        assert_eq!(
            Filter::parse("", &"x".repeat(400)),
            Err(FilterError::ActorTooLong)
        );
        assert!(matches!(
            Filter::parse(&"x".repeat(500), ""),
            Err(FilterError::UnknownAction(text)) if text.chars().count() == 61
        ));
    }

    #[test]
    fn links_carry_the_filter() {
        let filter = Filter::parse("signed_in", "a+b@example.com").unwrap();
        assert_eq!(filter.query(), "action=signed_in&actor=a%2Bb%40example.com");
        assert_eq!(Filter::default().query(), "");
    }

    #[test]
    fn a_cursor_is_an_event_number() {
        assert_eq!(parse_before(""), Ok(None));
        assert_eq!(parse_before("42"), Ok(Some(42)));
        assert_eq!(
            parse_before("99999999999999999999999999"),
            Ok(Some(i64::MAX))
        );
        assert_eq!(parse_before("-1"), Err(FilterError::BadCursor));
        assert_eq!(parse_before("1e9"), Err(FilterError::BadCursor));
        assert_eq!(parse_before("4\u{0}2"), Err(FilterError::BadCursor));
    }
}
