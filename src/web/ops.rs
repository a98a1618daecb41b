//! Operations: `GET /healthz` (the process is up and the database answers) and `GET /metrics`.

use actix_web::{HttpResponse, web};
use diesel::connection::SimpleConnection;

use crate::db::{DbError, Pool};

pub async fn check(pool: web::Data<Pool>) -> HttpResponse {
    let reachable = pool
        .run(|conn| conn.batch_execute("SELECT 1").map_err(DbError::from))
        .await;
    match reachable {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ok"),
        Err(error) => {
            tracing::warn!(%error, "health check failed");
            HttpResponse::ServiceUnavailable()
                .content_type("text/plain")
                .body("database unreachable")
        }
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(
    pool: web::Data<Pool>,
    metrics: web::Data<crate::metrics::Metrics>,
    settings: web::Data<crate::config::Settings>,
) -> HttpResponse {
    let offline_after = settings.offline_after();
    let gauges = pool
        .run(move |conn| {
            crate::metrics::Gauges::load(conn, chrono::Utc::now().naive_utc(), offline_after)
                .map_err(DbError::from)
        })
        .await;
    match gauges {
        Ok(gauges) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(metrics.render(&gauges)),
        Err(error) => {
            tracing::warn!(%error, "metrics unavailable");
            HttpResponse::ServiceUnavailable()
                .content_type("text/plain")
                .body("database unreachable")
        }
    }
}
