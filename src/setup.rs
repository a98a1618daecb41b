//! First start: the first admin comes from GRANITE_ADMIN_EMAIL/GRANITE_ADMIN_PASSWORD, or, without them,
//! from whoever opens the one-time setup URL printed to the log (like a Jenkins unlock code).

use diesel::prelude::*;

use crate::audit;
use crate::db::{DbConnection, server_settings, write_transaction};
use crate::organizations::{self, OrganizationSlug};
use crate::secret::{random_base62, sha256_hex};
use crate::users::{self, Email, Role, User};

const SETUP_CODE_SETTING: &str = "setup_code_sha256";
pub const DEFAULT_ORGANIZATION_NAME: &str = "Default organization";

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("Granite is already set up: sign in instead.")]
    AlreadySetUp,
    #[error("This setup link is not valid. Use the newest one printed in the server log.")]
    InvalidCode,
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// What the first start did.
#[derive(Debug)]
pub enum FirstStart {
    /// Users exist: nothing to do.
    AlreadySetUp,
    /// The admin from the configuration was created.
    AdminCreated { email: String },
    /// No user and no configured admin: this code, in the setup URL, lets the first visitor create one.
    SetupCodeIssued { code: String },
}

/// The admin named in the configuration, already checked, with the password hashed.
pub struct ConfiguredAdmin {
    pub email: Email,
    pub password_hash: String,
}

pub fn on_start(
    conn: &mut DbConnection,
    admin: Option<ConfiguredAdmin>,
) -> Result<FirstStart, SetupError> {
    if users::count(conn)? > 0 {
        return Ok(FirstStart::AlreadySetUp);
    }
    match admin {
        Some(admin) => {
            let slug = OrganizationSlug::parse(organizations::DEFAULT_SLUG)
                .expect("the default slug is valid");
            let created = write_transaction(conn, |conn| {
                insert_first_admin(
                    conn,
                    &slug,
                    DEFAULT_ORGANIZATION_NAME,
                    &admin.email,
                    &admin.password_hash,
                )
            });
            match created {
                Ok(user) => Ok(FirstStart::AdminCreated { email: user.email }),
                // Another replica created it a moment ago.
                Err(SetupError::AlreadySetUp) => Ok(FirstStart::AlreadySetUp),
                Err(e) => Err(e),
            }
        }
        None => {
            let code = random_base62(32);
            server_settings::set(conn, SETUP_CODE_SETTING, &sha256_hex(&code))?;
            Ok(FirstStart::SetupCodeIssued { code })
        }
    }
}

/// Whether `code` is the current setup code and setup is still open.
pub fn setup_code_is_valid(conn: &mut DbConnection, code: &str) -> QueryResult<bool> {
    let stored = server_settings::get(conn, SETUP_CODE_SETTING)?;
    Ok(stored.is_some_and(|hash| hash == sha256_hex(code)) && users::count(conn)? == 0)
}

/// Creates the first admin through the setup URL and retires the code.
pub fn finish_setup(
    conn: &mut DbConnection,
    code: &str,
    organization_name: &str,
    email: &Email,
    password_hash: &str,
) -> Result<User, SetupError> {
    write_transaction(conn, |conn| {
        if users::count(conn)? > 0 {
            return Err(SetupError::AlreadySetUp);
        }
        if !setup_code_is_valid(conn, code)? {
            return Err(SetupError::InvalidCode);
        }
        let slug = OrganizationSlug::from_name(organization_name);
        let user = insert_first_admin(conn, &slug, organization_name, email, password_hash)?;
        server_settings::delete(conn, SETUP_CODE_SETTING)?;
        Ok(user)
    })
}

/// The first organization and its admin, unless a user exists. Runs inside the caller's write
/// transaction, so the check and the insert cannot be split by another replica's start.
fn insert_first_admin(
    conn: &mut DbConnection,
    slug: &OrganizationSlug,
    organization_name: &str,
    email: &Email,
    password_hash: &str,
) -> Result<User, SetupError> {
    if users::count(conn)? > 0 {
        return Err(SetupError::AlreadySetUp);
    }
    let organization = match organizations::create(conn, slug, organization_name) {
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => {
            return Err(SetupError::AlreadySetUp);
        }
        other => other?,
    };
    let user = users::create(conn, organization.id, email, password_hash, Role::Admin)?;
    audit::record(
        conn,
        audit::Event {
            organization_id: Some(organization.id),
            actor_user_id: Some(user.id),
            actor: &user.email,
            action: audit::Action::FirstAdminCreated,
            target_type: "user",
            target_id: Some(user.id.to_string()),
            source_ip: None,
            details: serde_json::json!({ "organization": organization.slug }),
        },
    )?;
    Ok(user)
}
