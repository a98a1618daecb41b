//! The dashboard: pages for signed-in users, sign-in and first-start setup, under the session and CSRF
//! middleware that only the dashboard needs (the APIs authenticate every call with a key instead).
//!
//! - [`access`]: who may do what, as extractor types (`Viewer`, `Admin`).
//! - [`middleware`]: the session cookie, CSRF, and the sign-in gate.
//! - [`pages`]: one module per page or section; handlers load a view and render its template.
//! - [`view`]: what templates share (layout, charts, times).

pub mod access;
pub mod error;
pub mod middleware;
pub mod pages;
pub mod view;

use actix_session::SessionMiddleware;
use actix_session::storage::CookieSessionStore;
use actix_web::dev::HttpServiceFactory;
use actix_web::middleware::from_fn;
use actix_web::{HttpRequest, web};

use pages::{
    account, api_keys, api_management, audit_log, enrollment_tokens, invite, jobs, login,
    machine_cleanup, machine_detail, machines, members, queue_status, setup, status_strip,
};

/// Every dashboard route, inside the session and CSRF middleware.
pub fn scope(sessions: SessionMiddleware<CookieSessionStore>) -> impl HttpServiceFactory {
    web::scope("")
        .route("/login", web::get().to(login::show))
        .route("/login", web::post().to(login::submit))
        .route("/logout", web::post().to(login::sign_out))
        .route("/setup", web::get().to(setup::show))
        .route("/setup", web::post().to(setup::submit))
        .route("/invite", web::get().to(invite::show))
        .route("/invite", web::post().to(invite::accept))
        .service(
            web::scope("")
                .wrap(from_fn(middleware::sign_in::require_sign_in))
                .route("/", web::get().to(api_management::home))
                .route("/api-management", web::get().to(api_management::page))
                .route(account::PATH, web::get().to(account::show))
                .route(
                    "/account/password",
                    web::post().to(account::change_password),
                )
                .route(
                    "/account/sessions/sign-out-others",
                    web::post().to(account::sign_out_others),
                )
                .route(
                    "/account/sessions/{id}/sign-out",
                    web::post().to(account::sign_out_one),
                )
                .route("/api-management/api-keys", web::get().to(api_keys::show))
                .route("/api-management/api-keys", web::post().to(api_keys::create))
                .route(
                    "/api-management/api-keys/{id}/revoke",
                    web::post().to(api_keys::revoke),
                )
                .route(
                    "/api-management/api-keys/{id}/roll",
                    web::post().to(api_keys::roll),
                )
                .route(
                    "/api-management/api-keys/{id}/analytics",
                    web::get().to(api_keys::analytics),
                )
                .route(
                    "/api-management/api-keys/{id}/rate-limit",
                    web::post().to(api_keys::set_rate_limit),
                )
                .route(
                    "/api-management/enrollment-tokens",
                    web::get().to(enrollment_tokens::show),
                )
                .route(
                    "/api-management/enrollment-tokens",
                    web::post().to(enrollment_tokens::create),
                )
                .route(
                    "/api-management/enrollment-tokens/list",
                    web::get().to(enrollment_tokens::list),
                )
                .route(
                    "/api-management/enrollment-tokens/{id}/revoke",
                    web::post().to(enrollment_tokens::revoke),
                )
                .route(
                    "/api-management/machines/list",
                    web::get().to(machines::list),
                )
                .route(machine_cleanup::PATH, web::get().to(machine_cleanup::show))
                .route(
                    machine_cleanup::PATH,
                    web::post().to(machine_cleanup::confirm),
                )
                .route(
                    "/api-management/machines/{id}",
                    web::get().to(machine_detail::show),
                )
                .route(
                    "/api-management/machines/{id}/rename",
                    web::post().to(machine_detail::rename),
                )
                .route(
                    "/api-management/machines/{id}/priority",
                    web::post().to(machine_detail::set_priority),
                )
                .route(
                    "/api-management/machines/{id}/remove",
                    web::post().to(machines::remove),
                )
                .route(
                    "/api-management/machines/{id}/pause",
                    web::post().to(machines::set_paused::<true>),
                )
                .route(
                    "/api-management/machines/{id}/resume",
                    web::post().to(machines::set_paused::<false>),
                )
                .route(members::PATH, web::get().to(members::show))
                .route(
                    "/api-management/members/invites",
                    web::post().to(members::invite),
                )
                .route(
                    "/api-management/members/invites/{id}/revoke",
                    web::post().to(members::revoke_invite),
                )
                .route(
                    "/api-management/members/{id}/role",
                    web::post().to(members::change_role),
                )
                .route(
                    "/api-management/members/{id}/remove",
                    web::post().to(members::remove),
                )
                .route("/api-management/queue", web::get().to(queue_status::show))
                .route(
                    "/api-management/status-strip",
                    web::get().to(status_strip::show),
                )
                .route("/api-management/jobs", web::get().to(jobs::page))
                .route("/api-management/jobs/{run_id}", web::get().to(jobs::detail))
                .route(
                    "/api-management/jobs/{run_id}/cancel",
                    web::post().to(jobs::cancel),
                )
                .route(
                    "/api-management/jobs/{run_id}/retry",
                    web::post().to(jobs::retry),
                )
                .route(audit_log::PATH, web::get().to(audit_log::page))
                .route(audit_log::DOWNLOAD_PATH, web::get().to(audit_log::download)),
        )
        // Innermost first: CSRF reads the session; before anything, a client with too many changes in
        // flight is turned away (`ops::in_flight`).
        .wrap(from_fn(middleware::csrf::protect))
        .wrap(sessions)
        .wrap(from_fn(
            crate::ops::in_flight::limit_changes::<error::WebError>,
        ))
}

/// Where users and machines reach this server, for links and commands the dashboard shows:
/// GRANITE_PUBLIC_URL when set (behind a proxy the request's own Host may be an internal name), else
/// the address this request came to.
pub fn server_url(req: &HttpRequest, settings: &crate::config::Settings) -> String {
    match &settings.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

/// After a change made from a page: to `location`, which announces `said` once loaded (htmx follows
/// `HX-Redirect`; a plain form gets 303).
pub fn redirect_with_flash(
    req: &HttpRequest,
    session: actix_session::Session,
    location: &str,
    said: &str,
) -> actix_web::HttpResponse {
    middleware::session::DashboardSession::new(session).set_flash(said);
    if is_htmx(req) {
        actix_web::HttpResponse::Ok()
            .insert_header(("HX-Redirect", location))
            .finish()
    } else {
        pages::login::see_other(location)
    }
}

/// Whether htmx sent the request (it then wants a fragment, not a page).
pub fn is_htmx(req: &HttpRequest) -> bool {
    req.headers().contains_key("HX-Request")
}

/// A fragment's URL opened directly (a link, a reload) leads to its section of the page instead.
pub fn page_instead_of_fragment(
    req: &HttpRequest,
    section: &str,
) -> Option<actix_web::HttpResponse> {
    (!is_htmx(req)).then(|| pages::login::see_other(&format!("/api-management#{section}")))
}

/// The signed-in user as the audit log records them.
pub fn actor(req: &HttpRequest, user: &access::CurrentUser) -> crate::audit::Actor {
    crate::audit::Actor {
        user_id: user.id,
        email: user.email.clone(),
        role: user.role,
        source_ip: client_ip(req),
    }
}

/// The client's address, for the audit log ([`crate::ops::client_address`]).
pub fn client_ip(req: &HttpRequest) -> Option<String> {
    crate::ops::client_address::client_ip(req).map(|ip| ip.to_string())
}
