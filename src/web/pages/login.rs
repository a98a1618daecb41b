//! Sign-in and sign-out.

use actix_session::Session;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::audit;
use crate::config::Settings;
use crate::db::Pool;
use crate::users::throttle::{self, PasswordChecks};
use crate::users::{self, Email, password, sessions};
use crate::web::client_ip;
use crate::web::error::WebError;
use crate::web::middleware::session::DashboardSession;
use crate::web::middleware::sign_in::active_session;
use crate::web::view::layout::{Layout, render, render_with_status};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    email: String,
    error: Option<String>,
    /// No user exists yet: the page says where the setup link is.
    setup_pending: bool,
}

const WRONG_CREDENTIALS: &str = "Incorrect email or password.";

pub async fn show(
    session: Session,
    settings: web::Data<Settings>,
    pool: web::Data<Pool>,
) -> Result<HttpResponse, WebError> {
    let session = DashboardSession::new(session);
    if active_session(&session, &settings, &pool).await?.is_some() {
        return Ok(see_other("/api-management"));
    }
    let setup_pending = pool
        .run(|conn| users::count(conn).map_err(WebError::from))
        .await?
        == 0;
    let layout = Layout::new("Sign in", session.ensure_csrf_token());
    render(&LoginPage {
        layout,
        email: String::new(),
        error: None,
        setup_pending,
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

pub async fn submit(
    req: HttpRequest,
    session: Session,
    settings: web::Data<Settings>,
    pool: web::Data<Pool>,
    checks: web::Data<PasswordChecks>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, WebError> {
    let session = DashboardSession::new(session);
    let LoginForm { email, password } = form.into_inner();
    let source_ip = client_ip(&req);

    // Only a few checks run at once (`users::throttle`): beyond them, a sign-in is turned away before
    // it costs anything, not even a database query.
    let Some(turn) = checks.try_begin() else {
        return too_many(
            &session,
            &email,
            1,
            "Granite is checking many sign-ins right now. Try again in a moment.".into(),
        );
    };
    // A client that keeps failing waits before its next guess is even checked.
    let subjects = throttle::subjects(&email, source_ip.as_deref());
    let now = chrono::Utc::now().naive_utc();
    let waiting = {
        let subjects = subjects.clone();
        pool.run(move |conn| throttle::wait_remaining(conn, &subjects, now).map_err(WebError::from))
            .await?
    };
    if let Some(wait) = waiting {
        let seconds = (wait.as_secs_f64().ceil() as u64).max(1);
        tracing::info!(
            source_ip = source_ip.as_deref().unwrap_or("-"),
            seconds,
            "sign-in throttled"
        );
        return too_many(
            &session,
            &email,
            seconds,
            format!("Too many failed sign-ins from this address. Try again in {seconds} s."),
        );
    }

    let user = match Email::parse(&email) {
        Ok(parsed) => {
            pool.run(move |conn| users::find_by_email(conn, &parsed).map_err(WebError::from))
                .await?
        }
        Err(_) => None,
    };
    let stored_hash = user.as_ref().map(|u| u.password_hash.clone());
    let password_ok = turn
        .run(move || match stored_hash {
            Some(hash) => password::verify(&password, &hash),
            None => {
                password::verify_against_nothing(&password);
                false
            }
        })
        .await?;

    match user.filter(|_| password_ok) {
        Some(user) => {
            let (user_id, organization_id, actor) =
                (user.id, user.organization_id, user.email.clone());
            pool.run(move |conn| {
                users::record_sign_in(conn, user_id)?;
                throttle::succeeded(conn, &subjects)?;
                audit::record(
                    conn,
                    audit::Event {
                        organization_id: Some(organization_id),
                        actor_user_id: Some(user_id),
                        actor: &actor,
                        action: audit::Action::SignedIn,
                        target_type: "user",
                        target_id: Some(user_id.to_string()),
                        source_ip: source_ip.as_deref(),
                        details: serde_json::json!({}),
                    },
                )
                .map_err(WebError::from)
            })
            .await?;
            begin_session(&req, &session, &settings, &pool, user_id).await?;
            tracing::info!(user_id = user.id, "signed in");
            Ok(see_other("/api-management"))
        }
        None => {
            tracing::info!(
                source_ip = source_ip.as_deref().unwrap_or("-"),
                "sign-in refused"
            );
            pool.run(move |conn| throttle::failed(conn, &subjects, now).map_err(WebError::from))
                .await?;
            let layout = Layout::new("Sign in", session.ensure_csrf_token());
            let page = LoginPage {
                layout,
                email: email.trim().to_owned(),
                error: Some(WRONG_CREDENTIALS.into()),
                setup_pending: false,
            };
            render_with_status(StatusCode::UNAUTHORIZED, &page)
        }
    }
}

/// 429 with the form as it was and why, and when to try again.
fn too_many(
    session: &DashboardSession,
    email: &str,
    retry_after_seconds: u64,
    why: String,
) -> Result<HttpResponse, WebError> {
    let layout = Layout::new("Sign in", session.ensure_csrf_token());
    let page = LoginPage {
        layout,
        email: email.trim().to_owned(),
        error: Some(why),
        setup_pending: false,
    };
    let mut response = render_with_status(StatusCode::TOO_MANY_REQUESTS, &page)?;
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(retry_after_seconds),
    );
    Ok(response)
}

/// Opens a server-side session for `user_id`, remembering where it came from, and gives its id to the
/// browser in the session cookie (sign-in, and the end of first-start setup).
pub async fn begin_session(
    req: &HttpRequest,
    session: &DashboardSession,
    settings: &Settings,
    pool: &Pool,
    user_id: i64,
) -> Result<(), WebError> {
    let ip_address = client_ip(req);
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let lifetimes = settings.session_lifetimes();
    let id = pool
        .run(move |conn| {
            let origin = sessions::Origin {
                ip_address: ip_address.as_deref(),
                user_agent: user_agent.as_deref(),
            };
            sessions::start(
                conn,
                user_id,
                origin,
                lifetimes,
                chrono::Utc::now().naive_utc(),
            )
            .map_err(WebError::from)
        })
        .await?;
    session.sign_in(&id);
    Ok(())
}

/// Ends the server-side session (every copy of the cookie stops working) and drops the cookie.
pub async fn sign_out(session: Session, pool: web::Data<Pool>) -> Result<HttpResponse, WebError> {
    let session = DashboardSession::new(session);
    if let Some(id) = session.session_id() {
        pool.run(move |conn| sessions::end(conn, &id).map_err(WebError::from))
            .await?;
    }
    session.sign_out();
    Ok(see_other("/login"))
}

pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}
