//! The public API (API keys) and, as it arrives, the driver API (machine credentials). JSON in, JSON out,
//! errors per the contract.

pub mod auth;
pub mod body;
pub mod driver;
pub mod error;
pub mod me;
pub mod queue;
pub mod runs;

use actix_web::web;

/// Request bodies: JSON only, at most 1 MiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    let json = web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|error, _req| error::from_json_error(error).into());
    cfg.service(
        web::scope("/api")
            .app_data(json)
            .route("/v1/driver/enroll", web::post().to(driver::enroll))
            .route("/v1/driver/heartbeat", web::post().to(driver::heartbeat))
            .route("/v1/driver/jobs/claim", web::post().to(driver::claim))
            .route(
                "/v1/driver/jobs/{run_id}/complete",
                web::post().to(driver::complete),
            )
            .route(
                "/v1/driver/jobs/{run_id}/release",
                web::post().to(driver::release),
            )
            .route("/me", web::get().to(me::show))
            .route("/queue", web::get().to(queue::show))
            .route("/agent-runs/{run_id}", web::get().to(runs::show))
            .route("/agent-runs/{run_id}/cancel", web::post().to(runs::cancel))
            .route("/{org}/{endpoint}", web::post().to(runs::start))
            .default_service(web::to(error::not_found)),
    );
}
