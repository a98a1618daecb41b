//! Who may do what on the dashboard, by type. A handler names what it needs in its signature:
//! [`Viewer`] for anyone signed in to the organization (reading), [`Member`] for the everyday changes
//! members may make too (creating keys and tokens, cancelling and retrying runs), [`Admin`] for changes
//! only admins may make. There is no other way to reach the signed-in user, so a handler that changes
//! something cannot be written without deciding who may call it. [`CurrentUser::can_manage`],
//! [`CurrentUser::can_operate`] and [`CurrentUser::may_revoke`] are the same rules for templates (which
//! controls to show) and for the one rule that depends on the object (members revoke what they
//! created).

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};

use crate::organizations::Organization;
use crate::users::Role;
use crate::web::error::WebError;

/// The signed-in user, put on the request by the sign-in middleware
/// ([`crate::web::middleware::sign_in`]).
#[derive(Clone, Debug)]
pub struct CurrentUser {
    pub id: i64,
    /// The server-side session this request came in on (`users::sessions`).
    pub session_id: i64,
    pub email: String,
    pub role: Role,
    pub organization: Organization,
}

impl CurrentUser {
    /// Whether this user may change keys, tokens and machines: what [`Admin`] lets through.
    pub fn can_manage(&self) -> bool {
        self.role.can_manage()
    }

    /// Whether this user may create keys and tokens and cancel or retry runs: what [`Member`] lets
    /// through.
    pub fn can_operate(&self) -> bool {
        self.role.can_operate()
    }

    /// Whether this user may revoke (or roll) a key or token created by `created_by`: admins any,
    /// members their own.
    pub fn may_revoke(&self, created_by: Option<i64>) -> bool {
        self.role.may_revoke(self.id, created_by)
    }
}

/// Anyone signed in to the organization: every role may read.
#[derive(Clone, Debug)]
pub struct Viewer(pub CurrentUser);

/// An admin or a member of the organization; viewers are refused (403) before the handler runs.
#[derive(Clone, Debug)]
pub struct Member(pub CurrentUser);

/// An admin of the organization; anyone else is refused (403) before the handler runs.
#[derive(Clone, Debug)]
pub struct Admin(pub CurrentUser);

fn signed_in(req: &HttpRequest) -> Result<CurrentUser, WebError> {
    req.extensions()
        .get::<CurrentUser>()
        .cloned()
        .ok_or_else(|| {
            WebError::Internal(anyhow::anyhow!(
                "a signed-in user was asked for on a route outside the signed-in scope"
            ))
        })
}

impl FromRequest for Viewer {
    type Error = WebError;
    type Future = Ready<Result<Self, WebError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(signed_in(req).map(Self))
    }
}

impl FromRequest for Member {
    type Error = WebError;
    type Future = Ready<Result<Self, WebError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(signed_in(req).and_then(|user| {
            if user.can_operate() {
                Ok(Self(user))
            } else {
                Err(WebError::ViewerOnly)
            }
        }))
    }
}

impl FromRequest for Admin {
    type Error = WebError;
    type Future = Ready<Result<Self, WebError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(signed_in(req).and_then(|user| {
            if user.can_manage() {
                Ok(Self(user))
            } else {
                Err(WebError::AdminOnly)
            }
        }))
    }
}
