//! The invite link's page: the invitee chooses a password and is signed in. Reached signed out; the
//! code is in the query (request logs write paths only).

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::config::Settings;
use crate::db::Pool;
use crate::users::invites::{self, InviteError};
use crate::users::password::Password;
use crate::users::throttle::PasswordChecks;
use crate::web::error::WebError;
use crate::web::middleware::session::DashboardSession;
use crate::web::pages::login::{begin_session, see_other};
use crate::web::view::layout::{Layout, render_with_status};

#[derive(Template)]
#[template(path = "invite.html")]
struct InvitePage {
    layout: Layout,
    code: String,
    /// The invited address and role, when the link is valid.
    invited: Option<(String, String)>,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct CodeQuery {
    #[serde(default)]
    code: String,
}

/// The invite the code opens, as (email, role label).
async fn invited(pool: &Pool, code: &str) -> Result<Option<(String, String)>, WebError> {
    let code = code.to_owned();
    let now = chrono::Utc::now().naive_utc();
    let open = pool
        .run(move |conn| invites::find_open(conn, &code, now).map_err(WebError::from))
        .await?;
    Ok(open.map(|invite| (invite.email.clone(), invite.role().label().to_owned())))
}

fn render_page(
    session: &DashboardSession,
    code: String,
    invited: Option<(String, String)>,
    error: Option<String>,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    let page = InvitePage {
        layout: Layout::new("Join Granite", session.ensure_csrf_token()),
        code,
        invited,
        error,
    };
    render_with_status(status, &page)
}

/// `GET /invite?code=…`.
pub async fn show(
    session: Session,
    pool: web::Data<Pool>,
    query: web::Query<CodeQuery>,
) -> Result<HttpResponse, WebError> {
    let session = DashboardSession::new(session);
    let code = query.into_inner().code;
    let invited = invited(&pool, &code).await?;
    let status = if invited.is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    render_page(&session, code, invited, None, status)
}

#[derive(Deserialize)]
pub struct AcceptForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirmation: String,
}

/// `POST /invite`: creates the account, uses the link up, signs the new member in.
pub async fn accept(
    req: HttpRequest,
    session: Session,
    settings: web::Data<Settings>,
    pool: web::Data<Pool>,
    checks: web::Data<PasswordChecks>,
    form: web::Form<AcceptForm>,
) -> Result<HttpResponse, WebError> {
    let session = DashboardSession::new(session);
    let form = form.into_inner();
    // Hashing costs; only a valid link earns it.
    let Some(invited) = invited(&pool, &form.code).await? else {
        let message = InviteError::NotValid.to_string();
        return render_page(&session, form.code, None, Some(message), StatusCode::GONE);
    };
    let refuse = |message: String| {
        render_page(
            &session,
            form.code.clone(),
            Some(invited.clone()),
            Some(message),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    let password = match Password::parse_confirmed(&form.password, &form.password_confirmation) {
        Ok(password) => password,
        Err(message) => return refuse(message),
    };
    let Some(turn) = checks.try_begin() else {
        return refuse("Granite is busy. Try again in a moment.".into());
    };
    let password_hash = turn.run(move || password.hash()).await?;
    let code = form.code.clone();
    let now = chrono::Utc::now().naive_utc();
    let accepted = pool
        .run(
            move |conn| match invites::accept(conn, &code, &password_hash, now) {
                Err(InviteError::Query(e)) => Err(WebError::from(e)),
                other => Ok(other),
            },
        )
        .await?;
    match accepted {
        Ok(user) => {
            tracing::info!(user_id = user.id, "invite accepted");
            begin_session(&req, &session, &settings, &pool, user.id).await?;
            session.set_flash(&format!(
                "Welcome to Granite. You are signed in as {}.",
                user.email
            ));
            Ok(see_other("/api-management"))
        }
        Err(error) => render_page(
            &session,
            form.code.clone(),
            None,
            Some(error.to_string()),
            StatusCode::GONE,
        ),
    }
}
