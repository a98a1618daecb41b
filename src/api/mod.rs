//! The public API (API keys) and, as it arrives, the driver API (machine credentials). JSON in, JSON out,
//! errors per the contract.

pub mod auth;
pub mod error;
pub mod me;
pub mod queue;

use actix_web::web;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api")
            .route("/me", web::get().to(me::show))
            .route("/queue", web::get().to(queue::show))
            .default_service(web::to(error::not_found)),
    );
}
