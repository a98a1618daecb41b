//! The signed-in user's own account: where they are signed in (and signing the other places out),
//! and their password.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::audit;
use crate::config::Settings;
use crate::db::Pool;
use crate::users;
use crate::users::password::{self, Password};
use crate::users::sessions::{self, Session};
use crate::users::throttle::PasswordChecks;
use crate::web::access::{CurrentUser, Viewer};
use crate::web::actor;
use crate::web::error::WebError;
use crate::web::middleware::session::DashboardSession;
use crate::web::pages::login::see_other;
use crate::web::view::layout::{Layout, render_with_status};
use crate::web::view::time::Moment;
use crate::web::view::user_agent::describe;

pub const PATH: &str = "/account";

pub struct SessionRow {
    pub id: i64,
    pub browser: String,
    pub user_agent: String,
    pub ip_address: String,
    pub signed_in: Moment,
    pub last_active: Moment,
    pub current: bool,
}

impl SessionRow {
    fn new(session: Session, current: i64, now: chrono::NaiveDateTime) -> Self {
        let user_agent = session.user_agent.unwrap_or_default();
        Self {
            id: session.id,
            browser: describe(&user_agent),
            user_agent,
            ip_address: session
                .ip_address
                .unwrap_or_else(|| "unknown address".into()),
            signed_in: Moment::new(session.created_at, now),
            last_active: Moment::new(session.last_seen_at, now),
            current: session.id == current,
        }
    }
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    layout: Layout,
    user: CurrentUser,
    sessions: Vec<SessionRow>,
    /// What the last action did, said once at the top of the page.
    notice: Option<String>,
    password_error: Option<String>,
}

#[derive(Deserialize)]
pub struct Done {
    done: Option<String>,
    ended: Option<u32>,
}

impl Done {
    fn notice(&self) -> Option<String> {
        match (self.done.as_deref(), self.ended) {
            (Some("password"), _) => {
                Some("Password changed. Every other session was signed out.".into())
            }
            (Some("signed-out-others"), Some(0)) => Some("There were no other sessions.".into()),
            (Some("signed-out-others"), Some(1)) => Some("Signed out 1 other session.".into()),
            (Some("signed-out-others"), Some(n)) => Some(format!("Signed out {n} other sessions.")),
            (Some("signed-out-one"), _) => Some("Signed out that session.".into()),
            _ => None,
        }
    }
}

pub async fn show(
    Viewer(user): Viewer,
    session: actix_session::Session,
    settings: web::Data<Settings>,
    pool: web::Data<Pool>,
    done: web::Query<Done>,
) -> Result<HttpResponse, WebError> {
    let notice = done.notice();
    render_page(
        &user,
        &session,
        &settings,
        &pool,
        notice,
        None,
        StatusCode::OK,
    )
    .await
}

async fn render_page(
    user: &CurrentUser,
    session: &actix_session::Session,
    settings: &Settings,
    pool: &Pool,
    notice: Option<String>,
    password_error: Option<String>,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    let (user_id, current) = (user.id, user.session_id);
    let (lifetimes, now) = (settings.session_lifetimes(), chrono::Utc::now().naive_utc());
    let listed = pool
        .run(move |conn| sessions::of_user(conn, user_id, lifetimes, now).map_err(WebError::from))
        .await?;
    let page = AccountPage {
        layout: Layout::new(
            "Your account",
            DashboardSession::new(session.clone()).ensure_csrf_token(),
        ),
        user: user.clone(),
        sessions: listed
            .into_iter()
            .map(|s| SessionRow::new(s, current, now))
            .collect(),
        notice,
        password_error,
    };
    render_with_status(status, &page)
}

/// Ends every session of this user but the one asking.
pub async fn sign_out_others(
    req: HttpRequest,
    Viewer(user): Viewer,
    pool: web::Data<Pool>,
) -> Result<HttpResponse, WebError> {
    let actor = actor(&req, &user);
    let (organization_id, user_id, keep) = (user.organization.id, user.id, user.session_id);
    let ended = pool
        .run(move |conn| {
            let ended = sessions::end_others(conn, user_id, keep)?;
            audit::record(
                conn,
                actor.event(
                    organization_id,
                    audit::Action::SignedOutOtherSessions,
                    "user",
                    user_id,
                    serde_json::json!({ "sessions": ended }),
                ),
            )?;
            Ok::<_, WebError>(ended)
        })
        .await?;
    Ok(see_other(&format!(
        "{PATH}?done=signed-out-others&ended={ended}"
    )))
}

/// Ends one other session of this user (a browser left signed in somewhere).
pub async fn sign_out_one(
    req: HttpRequest,
    Viewer(user): Viewer,
    pool: web::Data<Pool>,
    id: web::Path<i64>,
) -> Result<HttpResponse, WebError> {
    let id = id.into_inner();
    let actor = actor(&req, &user);
    let (organization_id, user_id) = (user.organization.id, user.id);
    pool.run(move |conn| {
        if !sessions::end_one(conn, user_id, id)? {
            return Err(WebError::NotFound);
        }
        audit::record(
            conn,
            actor.event(
                organization_id,
                audit::Action::SignedOutSession,
                "user",
                user_id,
                serde_json::json!({ "session": id }),
            ),
        )?;
        Ok(())
    })
    .await?;
    if id == user.session_id {
        // This very session: the same as signing out.
        return Ok(see_other("/login"));
    }
    Ok(see_other(&format!("{PATH}?done=signed-out-one")))
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    new_password_confirmation: String,
}

/// Changes the password after checking the current one; every other session ends, this one stays.
pub async fn change_password(
    req: HttpRequest,
    Viewer(user): Viewer,
    session: actix_session::Session,
    settings: web::Data<Settings>,
    pool: web::Data<Pool>,
    checks: web::Data<PasswordChecks>,
    form: web::Form<PasswordForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    let refuse = |message: &str| {
        render_page(
            &user,
            &session,
            &settings,
            &pool,
            None,
            Some(message.to_owned()),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    let new_password = match Password::parse(&form.new_password) {
        Ok(password) => password,
        Err(message) => return refuse(&message).await,
    };
    if form.new_password != form.new_password_confirmation {
        return refuse("The two new passwords differ.").await;
    }
    let Some(turn) = checks.try_begin() else {
        return refuse("Granite is checking many passwords right now. Try again in a moment.")
            .await;
    };
    let user_id = user.id;
    let stored = pool
        .run(move |conn| users::find(conn, user_id).map_err(WebError::from))
        .await?
        .ok_or(WebError::NotFound)?;
    let current = form.current_password;
    let new_hash = turn
        .run(move || password::verify(&current, &stored.password_hash).then(|| new_password.hash()))
        .await?;
    let Some(new_hash) = new_hash else {
        return refuse("The current password is not right.").await;
    };

    let actor = actor(&req, &user);
    let organization_id = user.organization.id;
    pool.run(move |conn| {
        users::set_password(conn, user_id, &new_hash)?;
        audit::record(
            conn,
            actor.event(
                organization_id,
                audit::Action::PasswordChanged,
                "user",
                user_id,
                serde_json::json!({}),
            ),
        )?;
        Ok::<_, WebError>(())
    })
    .await?;
    // Every session ended with the old password, this one included: the changer gets a new one.
    let session = DashboardSession::new(session);
    crate::web::pages::login::begin_session(&req, &session, &settings, &pool, user_id).await?;
    Ok(see_other(&format!("{PATH}?done=password")))
}
