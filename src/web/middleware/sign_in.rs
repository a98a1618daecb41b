//! The gate of the signed-in part of the dashboard: lets signed-in users through with their
//! [`CurrentUser`], sends everyone else to `/login`.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, web};

use crate::config::Settings;
use crate::db::Pool;
use crate::organizations::Organization;
use crate::users::User;
use crate::users::sessions;
use crate::web::access::CurrentUser;
use crate::web::error::WebError;
use crate::web::middleware::session::DashboardSession;

/// Lets signed-in users through with their `CurrentUser`; sends everyone else to `/login`.
pub async fn require_sign_in(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let session = DashboardSession::of(&req);
    let settings = req
        .app_data::<web::Data<Settings>>()
        .expect("Settings registered")
        .clone();
    let pool = req
        .app_data::<web::Data<Pool>>()
        .expect("Pool registered")
        .clone();

    let Some((signed_in, user, organization)) = active_session(&session, &settings, &pool).await?
    else {
        session.sign_out();
        let response = signed_out_response(&req);
        return Ok(req.into_response(response).map_into_right_body());
    };
    req.extensions_mut().insert(CurrentUser {
        id: user.id,
        session_id: signed_in.id,
        email: user.email.clone(),
        role: user.role(),
        organization,
    });
    Ok(next.call(req).await?.map_into_left_body())
}

/// The live server-side session the cookie names, with its user and organization (refreshing its
/// last use): what every signed-in request and the sign-in page ask.
pub async fn active_session(
    session: &DashboardSession,
    settings: &Settings,
    pool: &Pool,
) -> Result<Option<(sessions::Session, User, Organization)>, WebError> {
    let Some(id) = session.session_id() else {
        return Ok(None);
    };
    let (lifetimes, now) = (settings.session_lifetimes(), chrono::Utc::now().naive_utc());
    pool.run(move |conn| sessions::find_active(conn, &id, lifetimes, now).map_err(WebError::from))
        .await
}

/// A plain navigation is redirected; an htmx request is told to load the sign-in page as a whole
/// (following a redirect would swap the sign-in form into a section).
fn signed_out_response(req: &ServiceRequest) -> HttpResponse {
    if req.headers().contains_key("HX-Request") {
        HttpResponse::Unauthorized()
            .insert_header(("HX-Redirect", "/login"))
            .finish()
    } else {
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/login"))
            .finish()
    }
}
