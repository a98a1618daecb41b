//! The Members page (admins): who can sign in to the organization, with which role and when they last
//! did; changing roles (an organization keeps an admin), removing users (their sessions end at once),
//! and one-time invite links.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::config::Settings;
use crate::db::Pool;
use crate::users::invites::{self, Invite, InviteError};
use crate::users::{self, Email, RemoveError, Role, RoleError, User};
use crate::web::access::{Admin, CurrentUser};
use crate::web::actor;
use crate::web::error::WebError;
use crate::web::middleware::session::DashboardSession;
use crate::web::redirect_with_flash;
use crate::web::view::layout::{Layout, NewSecret, render_with_status};
use crate::web::view::time::Moment;

pub const PATH: &str = "/api-management/members";

const CHOOSE_A_ROLE: &str = "Choose a role: admin, member or viewer.";

pub struct MemberRow {
    pub id: i64,
    pub email: String,
    pub role: Role,
    pub last_sign_in: Option<Moment>,
    pub joined: Moment,
    pub is_you: bool,
}

impl MemberRow {
    fn new(user: User, you: i64, now: chrono::NaiveDateTime) -> Self {
        Self {
            id: user.id,
            role: user.role(),
            last_sign_in: user.last_sign_in_at.map(|t| Moment::new(t, now)),
            joined: Moment::new(user.created_at, now),
            is_you: user.id == you,
            email: user.email,
        }
    }
}

pub struct InviteRow {
    pub id: i64,
    pub email: String,
    pub role: Role,
    pub created: Moment,
    pub expires: Moment,
}

impl InviteRow {
    fn new(invite: Invite, now: chrono::NaiveDateTime) -> Self {
        Self {
            id: invite.id,
            role: invite.role(),
            created: Moment::new(invite.created_at, now),
            expires: Moment::new(invite.expires_at, now),
            email: invite.email,
        }
    }
}

#[derive(Template)]
#[template(path = "members.html")]
struct MembersPage {
    layout: Layout,
    user: CurrentUser,
    members: Vec<MemberRow>,
    invites: Vec<InviteRow>,
    roles: [Role; 3],
    new_link: Option<NewSecret>,
    form_email: String,
    form_role: Role,
    error: Option<String>,
}

/// What a render of the page carries besides the lists.
#[derive(Default)]
struct Extras {
    new_link: Option<NewSecret>,
    form_email: String,
    form_role: Option<Role>,
    error: Option<String>,
}

async fn page(
    user: CurrentUser,
    session: actix_session::Session,
    pool: &Pool,
    status: StatusCode,
    extras: Extras,
) -> Result<HttpResponse, WebError> {
    let (organization_id, you) = (user.organization.id, user.id);
    let now = chrono::Utc::now().naive_utc();
    let (members, open) = pool
        .run(move |conn| {
            let members = users::list(conn, organization_id)?;
            let open = invites::list_open(conn, organization_id, now)?;
            Ok::<_, WebError>((members, open))
        })
        .await?;
    let session = DashboardSession::new(session);
    let page = MembersPage {
        layout: Layout::new("Members", session.ensure_csrf_token()).with_flash(&session),
        user,
        members: members
            .into_iter()
            .map(|m| MemberRow::new(m, you, now))
            .collect(),
        invites: open.into_iter().map(|i| InviteRow::new(i, now)).collect(),
        roles: Role::ALL,
        new_link: extras.new_link,
        form_email: extras.form_email,
        form_role: extras.form_role.unwrap_or(Role::Member),
        error: extras.error,
    };
    render_with_status(status, &page)
}

/// `GET /api-management/members`.
pub async fn show(
    Admin(user): Admin,
    session: actix_session::Session,
    pool: web::Data<Pool>,
) -> Result<HttpResponse, WebError> {
    page(user, session, &pool, StatusCode::OK, Extras::default()).await
}

#[derive(Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
}

/// `POST /api-management/members/invites`: makes a one-time link and shows it once.
pub async fn invite(
    req: HttpRequest,
    Admin(user): Admin,
    session: actix_session::Session,
    settings: web::Data<Settings>,
    pool: web::Data<Pool>,
    form: web::Form<InviteForm>,
) -> Result<HttpResponse, WebError> {
    let typed: String = form.email.chars().filter(|c| !c.is_control()).collect();
    let refuse = |message: String, role: Option<Role>| Extras {
        form_email: typed.clone(),
        form_role: role,
        error: Some(message),
        ..Extras::default()
    };
    let role = match Role::parse(form.role.trim()) {
        Ok(role) => role,
        Err(_) => {
            let extras = refuse(CHOOSE_A_ROLE.into(), None);
            return page(
                user,
                session,
                &pool,
                StatusCode::UNPROCESSABLE_ENTITY,
                extras,
            )
            .await;
        }
    };
    let email = match Email::parse(&form.email) {
        Ok(email) => email,
        Err(message) => {
            let extras = refuse(message, Some(role));
            return page(
                user,
                session,
                &pool,
                StatusCode::UNPROCESSABLE_ENTITY,
                extras,
            )
            .await;
        }
    };
    let (organization_id, actor) = (user.organization.id, actor(&req, &user));
    let now = chrono::Utc::now().naive_utc();
    let created = pool
        .run(
            move |conn| match invites::create(conn, organization_id, &email, role, &actor, now) {
                Err(InviteError::Query(e)) => Err(WebError::from(e)),
                other => Ok(other),
            },
        )
        .await?;
    let (invite, code) = match created {
        Ok(created) => created,
        Err(error) => {
            let extras = refuse(error.to_string(), Some(role));
            return page(
                user,
                session,
                &pool,
                StatusCode::UNPROCESSABLE_ENTITY,
                extras,
            )
            .await;
        }
    };
    tracing::info!(invite_id = invite.id, role = %invite.role, "member invited");
    let base = crate::web::server_url(&req, &settings);
    let link = NewSecret {
        element_id: "new-invite-link",
        label: "link",
        secret: format!("{base}/invite?code={code}"),
        note: format!(
            "Invite link for {} ({}) made: it works once, for 7 days.",
            invite.email,
            invite.role().label()
        ),
        command: None,
    };
    let extras = Extras {
        new_link: Some(link),
        ..Extras::default()
    };
    page(user, session, &pool, StatusCode::OK, extras).await
}

/// `POST /api-management/members/invites/{id}/revoke`.
pub async fn revoke_invite(
    req: HttpRequest,
    Admin(user): Admin,
    session: actix_session::Session,
    pool: web::Data<Pool>,
    invite_id: web::Path<i64>,
) -> Result<HttpResponse, WebError> {
    let (organization_id, actor, invite_id) = (
        user.organization.id,
        actor(&req, &user),
        invite_id.into_inner(),
    );
    let now = chrono::Utc::now().naive_utc();
    let invite = pool
        .run(
            move |conn| match invites::revoke(conn, organization_id, invite_id, &actor, now) {
                Ok(invite) => Ok(invite),
                Err(InviteError::NotFound) => Err(WebError::NotFound),
                Err(InviteError::Query(e)) => Err(e.into()),
                Err(other) => Err(WebError::BadRequest(other.to_string())),
            },
        )
        .await?;
    let said = format!(
        "Revoked the invite of {}: its link no longer works.",
        invite.email
    );
    Ok(redirect_with_flash(&req, session, PATH, &said))
}

#[derive(Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    role: String,
}

/// `POST /api-management/members/{id}/role`.
pub async fn change_role(
    req: HttpRequest,
    Admin(user): Admin,
    session: actix_session::Session,
    pool: web::Data<Pool>,
    member_id: web::Path<i64>,
    form: web::Form<RoleForm>,
) -> Result<HttpResponse, WebError> {
    let Ok(role) = Role::parse(form.role.trim()) else {
        let extras = Extras {
            error: Some(CHOOSE_A_ROLE.into()),
            ..Extras::default()
        };
        return page(
            user,
            session,
            &pool,
            StatusCode::UNPROCESSABLE_ENTITY,
            extras,
        )
        .await;
    };
    let (organization_id, actor, member_id) = (
        user.organization.id,
        actor(&req, &user),
        member_id.into_inner(),
    );
    let changed = pool
        .run(
            move |conn| match users::set_role(conn, organization_id, member_id, role, &actor) {
                Err(RoleError::Query(e)) => Err(WebError::from(e)),
                Err(RoleError::NotFound) => Err(WebError::NotFound),
                other => Ok(other),
            },
        )
        .await?;
    match changed {
        Ok(before) => {
            let said = format!("{} is now {}.", before.email, role.label().to_lowercase());
            Ok(redirect_with_flash(&req, session, PATH, &said))
        }
        Err(error) => {
            let extras = Extras {
                error: Some(error.to_string()),
                ..Extras::default()
            };
            page(
                user,
                session,
                &pool,
                StatusCode::UNPROCESSABLE_ENTITY,
                extras,
            )
            .await
        }
    }
}

/// `POST /api-management/members/{id}/remove`: the user and their sessions go at once.
pub async fn remove(
    req: HttpRequest,
    Admin(user): Admin,
    session: actix_session::Session,
    pool: web::Data<Pool>,
    member_id: web::Path<i64>,
) -> Result<HttpResponse, WebError> {
    let member_id = member_id.into_inner();
    if member_id == user.id {
        return Err(WebError::BadRequest(
            "You cannot remove yourself; another admin can.".into(),
        ));
    }
    let (organization_id, actor) = (user.organization.id, actor(&req, &user));
    let removed = pool
        .run(move |conn| {
            let member = users::find(conn, member_id)?
                .filter(|m| m.organization_id == organization_id)
                .ok_or(WebError::NotFound)?;
            match users::remove(conn, &member, Some(&actor)) {
                Ok(()) => Ok(Ok(member)),
                Err(RemoveError::Query(e)) => Err(WebError::from(e)),
                Err(other) => Ok(Err(other)),
            }
        })
        .await?;
    match removed {
        Ok(member) => {
            tracing::info!(user_id = member.id, "member removed");
            let said = format!("Removed {}; they were signed out everywhere.", member.email);
            Ok(redirect_with_flash(&req, session, PATH, &said))
        }
        Err(error) => Err(WebError::BadRequest(format!("{error}."))),
    }
}
