//! What the whole server shares, outside the dashboard and the APIs: `/livez`, `/healthz`, `/metrics`,
//! the embedded static files, who the client is behind a proxy, and the middleware around every request
//! (security headers, the request log).

pub mod assets;
pub mod client_address;
pub mod health;
pub mod in_flight;
pub mod metrics;
pub mod request_log;

use actix_web::middleware::DefaultHeaders;
use actix_web::web;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/livez", web::get().to(health::live))
        .route("/healthz", web::get().to(health::check))
        .route("/metrics", web::get().to(metrics::show))
        .route("/static/{name}", web::get().to(assets::serve));
}

/// Content-Security-Policy: scripts and styles only from our own files (no inline script, no eval),
/// no framing, forms only to us.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

/// Headers every response carries unless the handler set its own (static files set their caching).
pub fn security_headers(https_only: bool) -> DefaultHeaders {
    let headers = if https_only {
        // A year; subdomains are left to their own servers.
        DefaultHeaders::new().add(("Strict-Transport-Security", "max-age=31536000"))
    } else {
        DefaultHeaders::new()
    };
    headers
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
