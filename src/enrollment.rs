//! Enrollment tokens and enrollment: a one-time token lets exactly one new driver machine join the
//! token's organization and get its own credential. Only hashes are stored.

use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;

use crate::audit::{self, Actor};
use crate::db::schema::{enrollment_tokens, machines, organizations, users};
use crate::db::{DbConnection, write_transaction};
use crate::machines::{Machine, MachineProfile};
use crate::organizations::Organization;
use crate::secret::{Secret, SecretKind};

/// Used, expired and revoked tokens stay listed this long, as history.
pub const HISTORY_DAYS: i64 = 7;
pub const MAX_LIFETIME_HOURS: i64 = 168;

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = enrollment_tokens)]
pub struct EnrollmentToken {
    pub id: i64,
    pub organization_id: i64,
    pub description: String,
    pub secret_hash: String,
    pub hint: String,
    pub created_by_user_id: Option<i64>,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
    pub machine_id: Option<i64>,
    pub revoked_at: Option<NaiveDateTime>,
    pub revoked_by_user_id: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenState {
    Active,
    Used,
    Expired,
    Revoked,
}

impl TokenState {
    pub fn label(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::Used => "Used",
            Self::Expired => "Expired",
            Self::Revoked => "Revoked",
        }
    }
}

impl EnrollmentToken {
    pub fn state(&self, now: NaiveDateTime) -> TokenState {
        if self.used_at.is_some() {
            TokenState::Used
        } else if self.revoked_at.is_some() {
            TokenState::Revoked
        } else if self.expires_at <= now {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }
}

/// An optional note on what a token is for: trimmed, at most 200 characters.
pub fn parse_description(text: &str) -> Result<String, String> {
    let text = text.trim();
    if !crate::text::storable(text) {
        return Err("A description cannot contain the NUL character.".into());
    }
    if text.chars().count() > 200 {
        return Err("Use a description of at most 200 characters.".into());
    }
    Ok(text.to_owned())
}

/// A token's lifetime in hours: 1 to 168 (7 days).
pub fn parse_lifetime_hours(text: &str) -> Result<i64, String> {
    match text.trim().parse::<i64>() {
        Ok(hours) if (1..=MAX_LIFETIME_HOURS).contains(&hours) => Ok(hours),
        _ => Err("Pick a lifetime between 1 hour and 7 days.".into()),
    }
}

pub fn create(
    conn: &mut DbConnection,
    organization_id: i64,
    description: &str,
    lifetime_hours: i64,
    actor: &Actor,
) -> QueryResult<(EnrollmentToken, Secret)> {
    write_transaction(conn, |conn| {
        let secret = Secret::generate(SecretKind::EnrollmentToken);
        let now = chrono::Utc::now().naive_utc();
        let token = diesel::insert_into(enrollment_tokens::table)
            .values((
                enrollment_tokens::organization_id.eq(organization_id),
                enrollment_tokens::description.eq(description),
                enrollment_tokens::secret_hash.eq(secret.hash()),
                enrollment_tokens::hint.eq(secret.hint()),
                enrollment_tokens::created_by_user_id.eq(actor.user_id),
                enrollment_tokens::created_at.eq(now),
                enrollment_tokens::expires_at.eq(now + Duration::hours(lifetime_hours)),
            ))
            .returning(enrollment_tokens::all_columns)
            .get_result::<EnrollmentToken>(conn)?;
        audit::record(conn, actor.event(organization_id, audit::Action::EnrollmentTokenCreated, "enrollment_token", token.id, serde_json::json!({
            "hint": token.hint, "description": token.description, "lifetime_hours": lifetime_hours,
        })))?;
        Ok((token, secret))
    })
}

/// A token as the dashboard lists it: who created it and which machine it enrolled.
#[derive(Clone, Debug)]
pub struct ListedToken {
    pub token: EnrollmentToken,
    pub created_by: Option<String>,
    pub machine_name: Option<String>,
}

/// Active tokens and, for 7 days, used, expired and revoked ones; newest first.
pub fn list_recent(
    conn: &mut DbConnection,
    organization_id: i64,
    now: NaiveDateTime,
) -> QueryResult<Vec<ListedToken>> {
    let since = now - Duration::days(HISTORY_DAYS);
    let rows: Vec<(EnrollmentToken, Option<String>, Option<String>)> = enrollment_tokens::table
        .left_join(users::table.on(enrollment_tokens::created_by_user_id.eq(users::id.nullable())))
        .left_join(machines::table.on(enrollment_tokens::machine_id.eq(machines::id.nullable())))
        .filter(enrollment_tokens::organization_id.eq(organization_id))
        .filter(
            enrollment_tokens::used_at
                .gt(since)
                .or(enrollment_tokens::revoked_at.gt(since))
                .or(enrollment_tokens::used_at
                    .is_null()
                    .and(enrollment_tokens::revoked_at.is_null())
                    .and(enrollment_tokens::expires_at.gt(since))),
        )
        .order((
            enrollment_tokens::created_at.desc(),
            enrollment_tokens::id.desc(),
        ))
        .select((
            EnrollmentToken::as_select(),
            users::email.nullable(),
            machines::name.nullable(),
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(token, created_by, machine_name)| ListedToken {
            token,
            created_by,
            machine_name,
        })
        .collect())
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("No such enrollment token.")]
    NotFound,
    #[error("Only an active token can be revoked.")]
    NotActive,
    #[error("Only admins can revoke tokens someone else created.")]
    NotYours,
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// Revokes an active token: enrollments with it get `token_revoked` from now on.
pub fn revoke(
    conn: &mut DbConnection,
    organization_id: i64,
    token_id: i64,
    actor: &Actor,
) -> Result<EnrollmentToken, TokenError> {
    write_transaction(conn, |conn| {
        let now = chrono::Utc::now().naive_utc();
        let created_by: Option<Option<i64>> = enrollment_tokens::table
            .filter(enrollment_tokens::id.eq(token_id))
            .filter(enrollment_tokens::organization_id.eq(organization_id))
            .select(enrollment_tokens::created_by_user_id)
            .first(conn)
            .optional()?;
        let Some(created_by) = created_by else {
            return Err(TokenError::NotFound);
        };
        if !actor.may_revoke(created_by) {
            return Err(TokenError::NotYours);
        }
        let updated = diesel::update(
            enrollment_tokens::table
                .filter(enrollment_tokens::id.eq(token_id))
                .filter(enrollment_tokens::organization_id.eq(organization_id))
                .filter(enrollment_tokens::used_at.is_null())
                .filter(enrollment_tokens::revoked_at.is_null())
                .filter(enrollment_tokens::expires_at.gt(now)),
        )
        .set((
            enrollment_tokens::revoked_at.eq(now),
            enrollment_tokens::revoked_by_user_id.eq(actor.user_id),
        ))
        .returning(enrollment_tokens::all_columns)
        .get_result::<EnrollmentToken>(conn)
        .optional()?;
        let Some(token) = updated else {
            return Err(TokenError::NotActive);
        };
        audit::record(
            conn,
            actor.event(
                organization_id,
                audit::Action::EnrollmentTokenRevoked,
                "enrollment_token",
                token.id,
                serde_json::json!({
                    "hint": token.hint,
                }),
            ),
        )?;
        Ok(token)
    })
}

/// Why an enrollment was refused (contract: "Enrollment errors").
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("This enrollment token is not known.")]
    InvalidToken,
    #[error("This enrollment token has already been used.")]
    TokenUsed,
    #[error("This enrollment token has expired.")]
    TokenExpired,
    #[error("This enrollment token has been revoked.")]
    TokenRevoked,
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

pub struct Enrolled {
    pub machine: Machine,
    pub credential: Secret,
    pub organization: Organization,
}

/// Consumes the token and creates the machine, atomically: the token is spent by one conditional
/// update, so of many simultaneous enrollments with one token exactly one gets through.
pub fn enroll(
    conn: &mut DbConnection,
    token: &Secret,
    profile: &MachineProfile,
) -> Result<Enrolled, EnrollError> {
    let token_hash = token.hash();
    write_transaction(conn, |conn| {
        let now = chrono::Utc::now().naive_utc();
        let spent = diesel::update(
            enrollment_tokens::table
                .filter(enrollment_tokens::secret_hash.eq(&token_hash))
                .filter(enrollment_tokens::used_at.is_null())
                .filter(enrollment_tokens::revoked_at.is_null())
                .filter(enrollment_tokens::expires_at.gt(now)),
        )
        .set(enrollment_tokens::used_at.eq(now))
        .returning(enrollment_tokens::all_columns)
        .get_result::<EnrollmentToken>(conn)
        .optional()?;
        let Some(spent) = spent else {
            let existing = enrollment_tokens::table
                .filter(enrollment_tokens::secret_hash.eq(&token_hash))
                .select(EnrollmentToken::as_select())
                .first(conn)
                .optional()?;
            return Err(match existing.map(|t| t.state(now)) {
                None | Some(TokenState::Active) => EnrollError::InvalidToken,
                Some(TokenState::Used) => EnrollError::TokenUsed,
                Some(TokenState::Expired) => EnrollError::TokenExpired,
                Some(TokenState::Revoked) => EnrollError::TokenRevoked,
            });
        };
        let credential = Secret::generate(SecretKind::MachineCredential);
        let machine = crate::machines::insert(
            conn,
            spent.organization_id,
            profile,
            &credential.hash(),
            spent.id,
            now,
        )?;
        diesel::update(enrollment_tokens::table.find(spent.id))
            .set(enrollment_tokens::machine_id.eq(machine.id))
            .execute(conn)?;
        let organization = organizations::table
            .find(spent.organization_id)
            .select(Organization::as_select())
            .first(conn)?;
        audit::record(
            conn,
            audit::Event {
                organization_id: Some(spent.organization_id),
                actor_user_id: None,
                actor: &format!("machine {}", machine.name),
                action: audit::Action::MachineEnrolled,
                target_type: "machine",
                target_id: Some(machine.id.to_string()),
                // Where the request came from; what the machine says about itself is kept apart.
                source_ip: profile.request_ip.as_deref(),
                details: serde_json::json!({
                    "token_id": spent.id,
                    "token_hint": spent.hint,
                    "token_created_by": spent.created_by_user_id,
                    "claimed_ip_address": machine.ip_address,
                }),
            },
        )?;
        Ok(Enrolled {
            machine,
            credential,
            organization,
        })
    })
}

/// The token a machine enrolled with and who created it, for the machine's detail page.
pub fn origin_of(
    conn: &mut DbConnection,
    token_id: i64,
) -> QueryResult<Option<(EnrollmentToken, Option<String>)>> {
    enrollment_tokens::table
        .left_join(users::table.on(enrollment_tokens::created_by_user_id.eq(users::id.nullable())))
        .filter(enrollment_tokens::id.eq(token_id))
        .select((EnrollmentToken::as_select(), users::email.nullable()))
        .first(conn)
        .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_and_descriptions() {
        assert_eq!(parse_lifetime_hours("24"), Ok(24));
        assert_eq!(parse_lifetime_hours("168"), Ok(168));
        assert!(parse_lifetime_hours("169").is_err());
        assert!(parse_lifetime_hours("0").is_err());
        assert!(parse_lifetime_hours("soon").is_err());
        assert_eq!(parse_description("  rack 4  ").unwrap(), "rack 4");
        assert!(parse_description(&"d".repeat(201)).is_err());
    }
}
