//! The one-time setup page that creates the first admin when none was configured.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::config::Settings;
use crate::db::Pool;
use crate::setup::{self, SetupError};
use crate::users::Email;
use crate::users::password::Password;
use crate::users::throttle::PasswordChecks;
use crate::web::error::WebError;
use crate::web::middleware::session::DashboardSession;
use crate::web::pages::login::{begin_session, see_other};
use crate::web::view::layout::{Layout, render, render_with_status};

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    layout: Layout,
    code: String,
    code_valid: bool,
    organization_name: String,
    email: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct CodeQuery {
    #[serde(default)]
    code: String,
}

pub async fn show(
    session: Session,
    pool: web::Data<Pool>,
    query: web::Query<CodeQuery>,
) -> Result<HttpResponse, WebError> {
    let session = DashboardSession::new(session);
    let code = query.into_inner().code;
    let check = code.clone();
    let code_valid = pool
        .run(move |conn| setup::setup_code_is_valid(conn, &check).map_err(WebError::from))
        .await?;
    let page = SetupPage {
        layout: Layout::new("Set up Granite", session.ensure_csrf_token()),
        code,
        code_valid,
        organization_name: String::new(),
        email: String::new(),
        error: None,
    };
    render(&page)
}

#[derive(Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    organization_name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirmation: String,
}

pub async fn submit(
    req: HttpRequest,
    session: Session,
    settings: web::Data<Settings>,
    pool: web::Data<Pool>,
    checks: web::Data<PasswordChecks>,
    form: web::Form<SetupForm>,
) -> Result<HttpResponse, WebError> {
    let session = DashboardSession::new(session);
    let form = form.into_inner();
    let organization_name = form.organization_name.trim().to_owned();
    let invalid = |message: String| {
        let page = SetupPage {
            layout: Layout::new("Set up Granite", session.ensure_csrf_token()),
            code: form.code.clone(),
            code_valid: true,
            organization_name: organization_name.clone(),
            email: form.email.trim().to_owned(),
            error: Some(message),
        };
        render_with_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
    };
    if organization_name.is_empty() || organization_name.chars().count() > 100 {
        return invalid("Name the organization (1–100 characters).".into());
    }
    let email = match Email::parse(&form.email) {
        Ok(email) => email,
        Err(message) => return invalid(message),
    };
    let password = match Password::parse_confirmed(&form.password, &form.password_confirmation) {
        Ok(password) => password,
        Err(message) => return invalid(message),
    };
    // Hashing costs; only a valid setup link earns it, a few at a time (`users::throttle`).
    let code = form.code.clone();
    let code_valid = pool
        .run(move |conn| setup::setup_code_is_valid(conn, &code).map_err(WebError::from))
        .await?;
    if !code_valid {
        return invalid(SetupError::InvalidCode.to_string());
    }
    let Some(turn) = checks.try_begin() else {
        return invalid("Granite is busy. Try again in a moment.".into());
    };
    let password_hash = turn.run(move || password.hash()).await?;
    let (code, name) = (form.code.clone(), organization_name.clone());
    let created = pool
        .run(move |conn| {
            Ok::<_, WebError>(setup::finish_setup(
                conn,
                &code,
                &name,
                &email,
                &password_hash,
            ))
        })
        .await?;
    match created {
        Ok(user) => {
            tracing::info!(
                user_id = user.id,
                "first admin created through the setup page"
            );
            begin_session(&req, &session, &settings, &pool, user.id).await?;
            Ok(see_other("/api-management"))
        }
        Err(SetupError::Query(e)) => Err(e.into()),
        Err(e) => invalid(e.to_string()),
    }
}
