//! The dashboard: pages for signed-in admins, sign-in, first-start setup, and the middleware that
//! guards them (sessions, CSRF, security headers).

pub mod api_keys;
pub mod api_management;
pub mod assets;
pub mod auth;
pub mod charts;
pub mod csrf;
pub mod enrollment_tokens;
pub mod error;
pub mod jobs;
pub mod layout;
pub mod login;
pub mod machines;
pub mod ops;
pub mod queue_status;
pub mod request_log;
pub mod session;
pub mod session_key;
pub mod setup;
pub mod time;

use actix_web::middleware::{DefaultHeaders, from_fn};
use actix_web::{HttpRequest, web};

/// Every route of the server. The public and driver APIs join here as they arrive.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(ops::check))
        .route("/metrics", web::get().to(ops::metrics))
        .route("/static/{name}", web::get().to(assets::serve))
        .route("/login", web::get().to(login::show))
        .route("/login", web::post().to(login::submit))
        .route("/logout", web::post().to(login::sign_out))
        .route("/setup", web::get().to(setup::show))
        .route("/setup", web::post().to(setup::submit))
        .service(
            web::scope("")
                .wrap(from_fn(auth::require_sign_in))
                .route("/", web::get().to(api_management::home))
                .route("/api-management", web::get().to(api_management::page))
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
                .route(
                    "/api-management/machines/{id}",
                    web::get().to(machines::detail),
                )
                .route(
                    "/api-management/machines/{id}/remove",
                    web::post().to(machines::remove),
                )
                .route("/api-management/queue", web::get().to(queue_status::show))
                .route("/api-management/jobs", web::get().to(jobs::page)),
        );
}

/// Content-Security-Policy: scripts and styles only from our own files (no inline script, no eval),
/// no framing, forms only to us.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

/// Headers every response carries unless the handler set its own (static files set their caching).
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        .add(("X-Frame-Options", "DENY"))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Referrer-Policy", "same-origin"))
        .add(("Cross-Origin-Opener-Policy", "same-origin"))
        .add((
            "Permissions-Policy",
            "camera=(), microphone=(), geolocation=()",
        ))
        // Pages can show a secret once; no copy of them may stay in a cache.
        .add(("Cache-Control", "no-store"))
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
    (!is_htmx(req)).then(|| login::see_other(&format!("/api-management#{section}")))
}

/// The signed-in user as the audit log records them.
pub fn actor(req: &HttpRequest, user: &auth::CurrentUser) -> crate::audit::Actor {
    crate::audit::Actor {
        user_id: user.id,
        email: user.email.clone(),
        source_ip: client_ip(req),
    }
}

/// The address of the peer that sent the request, for the audit log. Forwarding headers are not
/// trusted: any client can set them.
pub fn client_ip(req: &HttpRequest) -> Option<String> {
    req.peer_addr().map(|addr| addr.ip().to_string())
}
