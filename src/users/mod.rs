//! Users: people who sign in to the dashboard. Each belongs to one organization with one role.

pub mod invites;
pub mod password;
pub mod sessions;
pub mod throttle;

use diesel::prelude::*;

use crate::db::schema::users;
use crate::db::{DbConnection, write_transaction};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything, including members, machines and every key and token.
    Admin,
    /// Sees everything; creates API keys and enrollment tokens and revokes the ones they created;
    /// cancels and retries runs.
    Member,
    /// Sees everything of the organization, changes nothing.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Member, Role::Viewer];

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "admin" => Ok(Self::Admin),
            "member" => Ok(Self::Member),
            "viewer" => Ok(Self::Viewer),
            other => Err(format!(
                "unknown role \"{other}\": use admin, member or viewer"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
            Self::Viewer => "viewer",
        }
    }

    /// The role as the dashboard names it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Admin => "Admin",
            Self::Member => "Member",
            Self::Viewer => "Viewer",
        }
    }

    /// Whether the role may manage machines, members and everyone's keys and tokens (the dashboard's
    /// `Admin` extractor and every template's admin controls ask this).
    pub fn can_manage(self) -> bool {
        matches!(self, Self::Admin)
    }

    /// Whether the role may create keys and tokens, revoke its own, and cancel and retry runs (the
    /// dashboard's `Member` extractor asks this).
    pub fn can_operate(self) -> bool {
        matches!(self, Self::Admin | Self::Member)
    }

    /// Whether user `user_id` with this role may revoke (or roll) a key or token created by
    /// `created_by`: admins any, members their own, viewers none.
    pub fn may_revoke(self, user_id: i64, created_by: Option<i64>) -> bool {
        self.can_manage() || (self.can_operate() && created_by == Some(user_id))
    }
}

/// An email address as users type it, trimmed and lower-cased so sign-in ignores case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(text: &str) -> Result<Self, String> {
        let email = text.trim().to_lowercase();
        let well_formed = email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
        if !well_formed
            || email.len() > 254
            || email.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("Enter an email address like admin@example.com.".into());
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: i64,
    pub organization_id: i64,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: chrono::NaiveDateTime,
    pub last_sign_in_at: Option<chrono::NaiveDateTime>,
}

impl User {
    pub fn role(&self) -> Role {
        // The database only admits the three roles (CHECK constraint).
        Role::parse(&self.role).unwrap_or(Role::Viewer)
    }
}

pub fn create(
    conn: &mut DbConnection,
    organization_id: i64,
    email: &Email,
    password_hash: &str,
    role: Role,
) -> QueryResult<User> {
    diesel::insert_into(users::table)
        .values((
            users::organization_id.eq(organization_id),
            users::email.eq(email.as_str()),
            users::password_hash.eq(password_hash),
            users::role.eq(role.as_str()),
            users::created_at.eq(chrono::Utc::now().naive_utc()),
        ))
        // Whole-row RETURNING: what MultiConnection supports (not `as_returning`).
        .returning(users::all_columns)
        .get_result::<User>(conn)
}

pub fn count(conn: &mut DbConnection) -> QueryResult<i64> {
    users::table.count().get_result(conn)
}

pub fn find_by_email(conn: &mut DbConnection, email: &Email) -> QueryResult<Option<User>> {
    users::table
        .filter(users::email.eq(email.as_str()))
        .select(User::as_select())
        .first(conn)
        .optional()
}

pub fn find(conn: &mut DbConnection, id: i64) -> QueryResult<Option<User>> {
    users::table
        .find(id)
        .select(User::as_select())
        .first(conn)
        .optional()
}

pub fn record_sign_in(conn: &mut DbConnection, id: i64) -> QueryResult<()> {
    diesel::update(users::table.find(id))
        .set(users::last_sign_in_at.eq(chrono::Utc::now().naive_utc()))
        .execute(conn)?;
    Ok(())
}

/// Sets a user's password and ends all their sessions: whoever knew the old password, or held a
/// session opened with it, is out. (A change made from the dashboard then opens the changer a new one.)
pub fn set_password(conn: &mut DbConnection, id: i64, password_hash: &str) -> QueryResult<()> {
    write_transaction(conn, |conn| {
        diesel::update(users::table.find(id))
            .set(users::password_hash.eq(password_hash))
            .execute(conn)?;
        sessions::end_all(conn, id)?;
        Ok(())
    })
}

/// The admins of an organization, counted inside a write transaction. On PostgreSQL their rows are
/// locked, so two admins demoting or removing each other at once cannot both pass the "one admin
/// left" check (SQLite has one writer at a time anyway).
fn admins_of(conn: &mut DbConnection, organization_id: i64) -> QueryResult<i64> {
    let admins = users::table
        .filter(users::organization_id.eq(organization_id))
        .filter(users::role.eq(Role::Admin.as_str()))
        .select(users::id);
    let ids: Vec<i64> = match conn {
        DbConnection::Postgres(pg) => admins.for_update().load(pg)?,
        DbConnection::Sqlite(sqlite) => admins.load(sqlite)?,
    };
    Ok(ids.len() as i64)
}

/// The users of an organization, by email.
pub fn list(conn: &mut DbConnection, organization_id: i64) -> QueryResult<Vec<User>> {
    users::table
        .filter(users::organization_id.eq(organization_id))
        .order(users::email)
        .select(User::as_select())
        .load(conn)
}

/// Why a role could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("No such member.")]
    NotFound,
    #[error("{0} is the last admin of the organization; make someone else admin first.")]
    LastAdmin(String),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// Changes the role of user `user_id` of the organization, keeping at least one admin; audited.
/// Returns the user as it was before.
pub fn set_role(
    conn: &mut DbConnection,
    organization_id: i64,
    user_id: i64,
    role: Role,
    actor: &crate::audit::Actor,
) -> Result<User, RoleError> {
    write_transaction(conn, |conn| {
        let user = find(conn, user_id)?
            .filter(|u| u.organization_id == organization_id)
            .ok_or(RoleError::NotFound)?;
        if user.role() == role {
            return Ok(user);
        }
        if user.role() == Role::Admin && admins_of(conn, organization_id)? <= 1 {
            return Err(RoleError::LastAdmin(user.email.clone()));
        }
        diesel::update(users::table.find(user.id))
            .set(users::role.eq(role.as_str()))
            .execute(conn)?;
        crate::audit::record(
            conn,
            actor.event(
                organization_id,
                crate::audit::Action::MemberRoleChanged,
                "user",
                user.id,
                serde_json::json!({
                    "email": user.email, "from": user.role, "to": role.as_str(),
                }),
            ),
        )?;
        Ok(user)
    })
}

/// Why a user could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("{0} is the last admin of the organization; make someone else admin first")]
    LastAdmin(String),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// Removes a user: their sessions end at once; what they created or did stays, attributed to
/// "a deleted user" (the audit log keeps their email as written then). An organization keeps at
/// least one admin.
pub fn remove(
    conn: &mut DbConnection,
    user: &User,
    actor: Option<&crate::audit::Actor>,
) -> Result<(), RemoveError> {
    use crate::db::schema::{api_keys, audit_events, enrollment_tokens, machines};
    write_transaction(conn, |conn| {
        if user.role() == Role::Admin && admins_of(conn, user.organization_id)? <= 1 {
            return Err(RemoveError::LastAdmin(user.email.clone()));
        }
        let id = Some(user.id);
        let none: Option<i64> = None;
        sessions::end_all(conn, user.id)?;
        diesel::update(api_keys::table.filter(api_keys::created_by_user_id.eq(id)))
            .set(api_keys::created_by_user_id.eq(none))
            .execute(conn)?;
        diesel::update(api_keys::table.filter(api_keys::revoked_by_user_id.eq(id)))
            .set(api_keys::revoked_by_user_id.eq(none))
            .execute(conn)?;
        diesel::update(
            enrollment_tokens::table.filter(enrollment_tokens::created_by_user_id.eq(id)),
        )
        .set(enrollment_tokens::created_by_user_id.eq(none))
        .execute(conn)?;
        diesel::update(
            enrollment_tokens::table.filter(enrollment_tokens::revoked_by_user_id.eq(id)),
        )
        .set(enrollment_tokens::revoked_by_user_id.eq(none))
        .execute(conn)?;
        diesel::update(machines::table.filter(machines::removed_by_user_id.eq(id)))
            .set(machines::removed_by_user_id.eq(none))
            .execute(conn)?;
        diesel::update(machines::table.filter(machines::paused_by_user_id.eq(id)))
            .set(machines::paused_by_user_id.eq(none))
            .execute(conn)?;
        diesel::update(audit_events::table.filter(audit_events::actor_user_id.eq(id)))
            .set(audit_events::actor_user_id.eq(none))
            .execute(conn)?;
        diesel::delete(users::table.find(user.id)).execute(conn)?;
        if let Some(actor) = actor {
            crate::audit::record(
                conn,
                actor.event(
                    user.organization_id,
                    crate::audit::Action::MemberRemoved,
                    "user",
                    user.id,
                    serde_json::json!({ "email": user.email, "role": user.role }),
                ),
            )?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Admin@Example.COM ").unwrap().as_str(),
            "admin@example.com"
        );
        for bad in [
            "",
            "admin",
            "@example.com",
            "admin@",
            "a b@example.com",
            "a@b@c",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn roles_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert!(Role::parse("owner").is_err());
    }
}
