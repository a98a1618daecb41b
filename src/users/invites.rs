//! One-time invite links: an admin invites an email address with a role; the link, shown once, lets
//! the invitee choose a password and join the organization. Only the link's SHA-256 is stored. A link
//! works once, for 7 days, until revoked.

use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;

use super::{Email, Role, User};
use crate::audit::{self, Actor};
use crate::db::schema::{invites, users};
use crate::db::{DbConnection, write_transaction};
use crate::secret::{random_base62, sha256_hex};

/// How long an invite link works.
pub const LIFETIME: Duration = Duration::days(7);
/// Length of the random code in a link (base62: ~190 bits).
const CODE_LENGTH: usize = 32;

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = invites)]
pub struct Invite {
    pub id: i64,
    pub organization_id: i64,
    pub email: String,
    pub role: String,
    pub secret_hash: String,
    pub created_by_user_id: Option<i64>,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
    pub user_id: Option<i64>,
    pub revoked_at: Option<NaiveDateTime>,
}

impl Invite {
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::Viewer)
    }

    fn is_open(&self, now: NaiveDateTime) -> bool {
        self.used_at.is_none() && self.revoked_at.is_none() && self.expires_at > now
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    #[error("{0} already has an account.")]
    AlreadyMember(String),
    #[error(
        "This invite link is not valid: it was used, revoked, or has expired. Ask an admin for a new one."
    )]
    NotValid,
    #[error("No such invite.")]
    NotFound,
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// Invites `email` to the organization with `role`; returns the invite and its code (for the link,
/// shown once). An earlier open invite of the same address is revoked: the newest link is the one.
pub fn create(
    conn: &mut DbConnection,
    organization_id: i64,
    email: &Email,
    role: Role,
    actor: &Actor,
    now: NaiveDateTime,
) -> Result<(Invite, String), InviteError> {
    let code = random_base62(CODE_LENGTH);
    let invite = write_transaction(conn, |conn| {
        let taken: i64 = users::table
            .filter(users::email.eq(email.as_str()))
            .count()
            .get_result(conn)?;
        if taken > 0 {
            return Err(InviteError::AlreadyMember(email.as_str().to_owned()));
        }
        diesel::update(
            invites::table
                .filter(invites::organization_id.eq(organization_id))
                .filter(invites::email.eq(email.as_str()))
                .filter(invites::used_at.is_null())
                .filter(invites::revoked_at.is_null()),
        )
        .set(invites::revoked_at.eq(now))
        .execute(conn)?;
        let invite = diesel::insert_into(invites::table)
            .values((
                invites::organization_id.eq(organization_id),
                invites::email.eq(email.as_str()),
                invites::role.eq(role.as_str()),
                invites::secret_hash.eq(sha256_hex(&code)),
                invites::created_by_user_id.eq(actor.user_id),
                invites::created_at.eq(now),
                invites::expires_at.eq(now + LIFETIME),
            ))
            .returning(invites::all_columns)
            .get_result::<Invite>(conn)?;
        audit::record(
            conn,
            actor.event(
                organization_id,
                audit::Action::MemberInvited,
                "invite",
                invite.id,
                serde_json::json!({ "email": invite.email, "role": invite.role }),
            ),
        )?;
        Ok(invite)
    })?;
    Ok((invite, code))
}

/// Open invites of the organization (not used, not revoked, not expired), newest first.
pub fn list_open(
    conn: &mut DbConnection,
    organization_id: i64,
    now: NaiveDateTime,
) -> QueryResult<Vec<Invite>> {
    invites::table
        .filter(invites::organization_id.eq(organization_id))
        .filter(invites::used_at.is_null())
        .filter(invites::revoked_at.is_null())
        .filter(invites::expires_at.gt(now))
        .order((invites::created_at.desc(), invites::id.desc()))
        .select(Invite::as_select())
        .load(conn)
}

/// Revokes an open invite of the organization: its link stops working.
pub fn revoke(
    conn: &mut DbConnection,
    organization_id: i64,
    invite_id: i64,
    actor: &Actor,
    now: NaiveDateTime,
) -> Result<Invite, InviteError> {
    write_transaction(conn, |conn| {
        let invite = invites::table
            .filter(invites::id.eq(invite_id))
            .filter(invites::organization_id.eq(organization_id))
            .select(Invite::as_select())
            .first(conn)
            .optional()?
            .ok_or(InviteError::NotFound)?;
        if !invite.is_open(now) {
            return Err(InviteError::NotValid);
        }
        diesel::update(invites::table.find(invite.id))
            .set(invites::revoked_at.eq(now))
            .execute(conn)?;
        audit::record(
            conn,
            actor.event(
                organization_id,
                audit::Action::InviteRevoked,
                "invite",
                invite.id,
                serde_json::json!({ "email": invite.email, "role": invite.role }),
            ),
        )?;
        Ok(invite)
    })
}

/// The open invite a link's code names, if any.
pub fn find_open(
    conn: &mut DbConnection,
    code: &str,
    now: NaiveDateTime,
) -> QueryResult<Option<Invite>> {
    if code.is_empty() || code.len() > 64 {
        return Ok(None);
    }
    let found = invites::table
        .filter(invites::secret_hash.eq(sha256_hex(code)))
        .select(Invite::as_select())
        .first(conn)
        .optional()?;
    Ok(found.filter(|invite| invite.is_open(now)))
}

/// Accepts an invite: creates the user with the invite's email and role, and uses the link up. Two
/// acceptances of one link at once: one wins (the conditional update that marks it used), the other
/// gets [`InviteError::NotValid`].
pub fn accept(
    conn: &mut DbConnection,
    code: &str,
    password_hash: &str,
    now: NaiveDateTime,
) -> Result<User, InviteError> {
    write_transaction(conn, |conn| {
        let invite = find_open(conn, code, now)?.ok_or(InviteError::NotValid)?;
        let taken = diesel::update(
            invites::table
                .find(invite.id)
                .filter(invites::used_at.is_null())
                .filter(invites::revoked_at.is_null()),
        )
        .set(invites::used_at.eq(now))
        .execute(conn)?;
        if taken == 0 {
            return Err(InviteError::NotValid);
        }
        let email = Email::parse(&invite.email).map_err(|_| InviteError::NotValid)?;
        if super::find_by_email(conn, &email)?.is_some() {
            return Err(InviteError::AlreadyMember(invite.email.clone()));
        }
        let user = super::create(
            conn,
            invite.organization_id,
            &email,
            password_hash,
            invite.role(),
        )?;
        diesel::update(invites::table.find(invite.id))
            .set(invites::user_id.eq(user.id))
            .execute(conn)?;
        audit::record(
            conn,
            audit::Event {
                organization_id: Some(invite.organization_id),
                actor_user_id: Some(user.id),
                actor: &user.email,
                action: audit::Action::InviteAccepted,
                target_type: "user",
                target_id: Some(user.id.to_string()),
                source_ip: None,
                details: serde_json::json!({ "invite": invite.id, "role": invite.role }),
            },
        )?;
        Ok(user)
    })
}
