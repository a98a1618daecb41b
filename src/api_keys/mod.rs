//! API keys: created once and shown once, listed by hint, revoked or rolled, and checked on every call
//! to the public API. Only the SHA-256 of a key is stored.

pub mod cache;
pub mod rate_limit;
pub mod usage;

use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;

use crate::audit::{self, Actor};
use crate::db::schema::{api_keys, organizations, users};
use crate::db::{DbConnection, write_transaction};
use crate::organizations::Organization;
use crate::secret::{Secret, SecretKind};

/// Keys older than this get a "rotate" badge.
pub const ROTATE_AFTER_DAYS: i64 = 90;

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct ApiKey {
    pub id: i64,
    pub organization_id: i64,
    pub name: String,
    pub secret_hash: String,
    pub hint: String,
    pub created_by_user_id: Option<i64>,
    pub created_at: NaiveDateTime,
    pub expires_at: Option<NaiveDateTime>,
    pub replaced_by_key_id: Option<i64>,
    pub revoked_at: Option<NaiveDateTime>,
    pub revoked_by_user_id: Option<i64>,
    pub last_used_at: Option<NaiveDateTime>,
    pub last_used_ip: Option<String>,
    pub last_used_user_agent: Option<String>,
    /// Requests per minute this key may make; `None` for the server's default.
    pub rate_limit_per_minute: Option<i64>,
}

impl ApiKey {
    /// Whether the key opens the public API at `now`, and if not, why.
    pub fn check(&self, now: NaiveDateTime) -> Result<(), Rejection> {
        check(self.revoked_at, self.expires_at, now)
    }

    pub fn needs_rotation(&self, now: NaiveDateTime) -> bool {
        now - self.created_at >= Duration::days(ROTATE_AFTER_DAYS)
    }
}

/// The rule for whether a key opens the public API: not revoked, and not past the end of a roll's grace.
fn check(
    revoked_at: Option<NaiveDateTime>,
    expires_at: Option<NaiveDateTime>,
    now: NaiveDateTime,
) -> Result<(), Rejection> {
    if revoked_at.is_some() {
        return Err(Rejection::Revoked);
    }
    match expires_at {
        Some(expires_at) if expires_at <= now => Err(Rejection::Expired),
        _ => Ok(()),
    }
}

/// What a public API call needs to know about its key: no more columns than that, on the hottest path.
#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct KeyIdentity {
    pub id: i64,
    pub name: String,
    pub hint: String,
    pub expires_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
    /// Calls a minute this key may make; `None` for the server's default.
    pub rate_limit_per_minute: Option<i64>,
}

/// A key's name: trimmed, 1–100 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyName(String);

impl KeyName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let name = text.trim();
        if !crate::text::storable(name) {
            return Err("A name cannot contain the NUL character.".into());
        }
        match name.chars().count() {
            0 => Err("Give the key a name, e.g. the service that will use it.".into()),
            1..=100 => Ok(Self(name.to_owned())),
            _ => Err("Use a name of at most 100 characters.".into()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How long a rolled key keeps working next to its successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GracePeriod {
    Now,
    OneHour,
    OneDay,
    SevenDays,
}

impl GracePeriod {
    pub const ALL: [GracePeriod; 4] = [Self::Now, Self::OneHour, Self::OneDay, Self::SevenDays];

    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|g| g.as_str() == text)
            .ok_or_else(|| {
                "Pick how long the old key keeps working: now, 1 hour, 24 hours or 7 days.".into()
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Now => "now",
            Self::OneHour => "1h",
            Self::OneDay => "24h",
            Self::SevenDays => "7d",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Now => "Stop it now",
            Self::OneHour => "1 hour",
            Self::OneDay => "24 hours",
            Self::SevenDays => "7 days",
        }
    }

    pub fn duration(self) -> Duration {
        match self {
            Self::Now => Duration::zero(),
            Self::OneHour => Duration::hours(1),
            Self::OneDay => Duration::hours(24),
            Self::SevenDays => Duration::days(7),
        }
    }
}

/// Why a key that exists was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    Revoked,
    Expired,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("No such API key.")]
    NotFound,
    #[error("This key is already being replaced; roll its successor instead.")]
    AlreadyRolled,
    #[error("Only admins can change keys someone else created.")]
    NotYours,
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// A presented key as [`lookup`] found it, with its organization. It opens the API only while
/// [`AuthenticatedKey::check`] passes; the public API's extractor hands handlers only keys that did.
#[derive(Clone, Debug)]
pub struct AuthenticatedKey {
    pub key: KeyIdentity,
    pub organization: Organization,
}

impl AuthenticatedKey {
    pub fn check(&self, now: NaiveDateTime) -> Result<(), Rejection> {
        check(self.key.revoked_at, self.key.expires_at, now)
    }
}

/// A key as the dashboard lists it, with the email of whoever created it.
#[derive(Clone, Debug)]
pub struct ListedKey {
    pub key: ApiKey,
    pub created_by: Option<String>,
}

pub fn create(
    conn: &mut DbConnection,
    organization_id: i64,
    name: &KeyName,
    actor: &Actor,
) -> QueryResult<(ApiKey, Secret)> {
    write_transaction(conn, |conn| {
        let (key, secret) = insert(
            conn,
            organization_id,
            name,
            actor,
            chrono::Utc::now().naive_utc(),
        )?;
        audit::record(
            conn,
            actor.event(
                organization_id,
                audit::Action::ApiKeyCreated,
                "api_key",
                key.id,
                serde_json::json!({
                    "name": key.name, "hint": key.hint,
                }),
            ),
        )?;
        Ok((key, secret))
    })
}

fn insert(
    conn: &mut DbConnection,
    organization_id: i64,
    name: &KeyName,
    actor: &Actor,
    now: NaiveDateTime,
) -> QueryResult<(ApiKey, Secret)> {
    let secret = Secret::generate(SecretKind::ApiKey);
    let key = diesel::insert_into(api_keys::table)
        .values((
            api_keys::organization_id.eq(organization_id),
            api_keys::name.eq(name.as_str()),
            api_keys::secret_hash.eq(secret.hash()),
            api_keys::hint.eq(secret.hint()),
            api_keys::created_by_user_id.eq(actor.user_id),
            api_keys::created_at.eq(now),
        ))
        .returning(api_keys::all_columns)
        .get_result::<ApiKey>(conn)?;
    Ok((key, secret))
}

/// The keys that still open the API (active, or rolled and within their grace period), newest first.
pub fn list_live(
    conn: &mut DbConnection,
    organization_id: i64,
    now: NaiveDateTime,
) -> QueryResult<Vec<ListedKey>> {
    let rows: Vec<(ApiKey, Option<String>)> = api_keys::table
        .left_join(users::table.on(api_keys::created_by_user_id.eq(users::id.nullable())))
        .filter(api_keys::organization_id.eq(organization_id))
        .filter(api_keys::revoked_at.is_null())
        .filter(
            api_keys::expires_at
                .is_null()
                .or(api_keys::expires_at.gt(now)),
        )
        .order((api_keys::created_at.desc(), api_keys::id.desc()))
        .select((ApiKey::as_select(), users::email.nullable()))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(key, created_by)| ListedKey { key, created_by })
        .collect())
}

/// One key of the organization, whatever its state; another organization's key is not found.
pub fn find(
    conn: &mut DbConnection,
    organization_id: i64,
    key_id: i64,
) -> QueryResult<Option<ApiKey>> {
    api_keys::table
        .filter(api_keys::id.eq(key_id))
        .filter(api_keys::organization_id.eq(organization_id))
        .select(ApiKey::as_select())
        .first(conn)
        .optional()
}

/// A key's own rate limit as an admin types it: empty for the server's default, else a whole number
/// of calls a minute, 0 for unlimited.
pub fn parse_rate_limit(text: &str) -> Result<Option<i64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let max = rate_limit::MAX_LIMIT;
    match text.parse::<i64>() {
        Ok(n) if (0..=max).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "Enter a whole number of requests per minute from 0 (unlimited) to {max}, or leave it \
             empty for the server's default."
        )),
    }
}

/// Sets a key's own rate limit (`None`: the server's default). Takes effect on the next call, on every
/// replica.
pub fn set_rate_limit(
    conn: &mut DbConnection,
    organization_id: i64,
    key_id: i64,
    limit: Option<i64>,
    actor: &Actor,
) -> Result<ApiKey, KeyError> {
    write_transaction(conn, |conn| {
        let key = find(conn, organization_id, key_id)?.ok_or(KeyError::NotFound)?;
        diesel::update(api_keys::table.find(key.id))
            .set(api_keys::rate_limit_per_minute.eq(limit))
            .execute(conn)?;
        cache::tell_replicas(conn, key.id)?;
        audit::record(
            conn,
            actor.event(
                organization_id,
                audit::Action::ApiKeyRateLimitChanged,
                "api_key",
                key.id,
                serde_json::json!({
                    "name": key.name, "hint": key.hint,
                    "from": key.rate_limit_per_minute, "to": limit,
                }),
            ),
        )?;
        Ok(ApiKey {
            rate_limit_per_minute: limit,
            ..key
        })
    })
}

/// Revokes a key at once: the next call with it gets `revoked_api_key`, on every replica.
pub fn revoke(
    conn: &mut DbConnection,
    organization_id: i64,
    key_id: i64,
    actor: &Actor,
) -> Result<ApiKey, KeyError> {
    write_transaction(conn, |conn| {
        let key = find(conn, organization_id, key_id)?.ok_or(KeyError::NotFound)?;
        if !actor.may_revoke(key.created_by_user_id) {
            return Err(KeyError::NotYours);
        }
        if key.revoked_at.is_some() {
            return Ok(key);
        }
        let now = chrono::Utc::now().naive_utc();
        diesel::update(api_keys::table.find(key.id))
            .set((
                api_keys::revoked_at.eq(now),
                api_keys::revoked_by_user_id.eq(actor.user_id),
            ))
            .execute(conn)?;
        cache::tell_replicas(conn, key.id)?;
        audit::record(
            conn,
            actor.event(
                organization_id,
                audit::Action::ApiKeyRevoked,
                "api_key",
                key.id,
                serde_json::json!({
                    "name": key.name, "hint": key.hint,
                }),
            ),
        )?;
        Ok(ApiKey {
            revoked_at: Some(now),
            revoked_by_user_id: Some(actor.user_id),
            ..key
        })
    })
}

/// Replaces a key by a new one of the same name. The old key keeps working for `grace`, then answers
/// `expired_api_key`.
pub fn roll(
    conn: &mut DbConnection,
    organization_id: i64,
    key_id: i64,
    grace: GracePeriod,
    actor: &Actor,
) -> Result<(ApiKey, Secret), KeyError> {
    write_transaction(conn, |conn| {
        let now = chrono::Utc::now().naive_utc();
        let old = find(conn, organization_id, key_id)?.ok_or(KeyError::NotFound)?;
        if !actor.may_revoke(old.created_by_user_id) {
            return Err(KeyError::NotYours);
        }
        if old.check(now).is_err() {
            return Err(KeyError::NotFound);
        }
        if old.replaced_by_key_id.is_some() {
            return Err(KeyError::AlreadyRolled);
        }
        let name = KeyName(old.name.clone());
        let (new, secret) = insert(conn, organization_id, &name, actor, now)?;
        let expires_at = now + grace.duration();
        diesel::update(api_keys::table.find(old.id))
            .set((
                api_keys::expires_at.eq(expires_at),
                api_keys::replaced_by_key_id.eq(new.id),
            ))
            .execute(conn)?;
        cache::tell_replicas(conn, old.id)?;
        audit::record(conn, actor.event(organization_id, audit::Action::ApiKeyRolled, "api_key", old.id, serde_json::json!({
            "name": old.name, "old_hint": old.hint, "new_key_id": new.id, "new_hint": new.hint,
            "grace": grace.as_str(), "old_key_expires_at": expires_at.and_utc().to_rfc3339(),
        })))?;
        Ok((new, secret))
    })
}

/// The one indexed lookup behind a public API call whose key is not remembered: the key with this
/// hash and its organization, whatever its state.
pub fn lookup(conn: &mut DbConnection, secret_hash: &str) -> QueryResult<Option<AuthenticatedKey>> {
    api_keys::table
        .inner_join(organizations::table)
        .filter(api_keys::secret_hash.eq(secret_hash))
        .select((KeyIdentity::as_select(), Organization::as_select()))
        .first(conn)
        .optional()
        .map(|found| found.map(|(key, organization)| AuthenticatedKey { key, organization }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(KeyName::parse("  billing  ").unwrap().as_str(), "billing");
        assert!(KeyName::parse("   ").is_err());
        assert!(KeyName::parse(&"é".repeat(100)).is_ok());
        assert!(KeyName::parse(&"x".repeat(101)).is_err());
    }

    #[test]
    fn grace_periods_round_trip() {
        for grace in GracePeriod::ALL {
            assert_eq!(GracePeriod::parse(grace.as_str()), Ok(grace));
        }
        assert!(GracePeriod::parse("forever").is_err());
        assert_eq!(GracePeriod::OneDay.duration(), Duration::hours(24));
    }
}
