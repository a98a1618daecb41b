//! `GET /metrics`: the Prometheus registry of [`crate::metrics`], with the gauges read at scrape time.

use actix_web::{HttpResponse, web};

use crate::db::{DbError, Pool};
use crate::machines::fleet::Fleet;

/// `GET /metrics`: Prometheus text format.
pub async fn show(
    pool: web::Data<Pool>,
    metrics: web::Data<crate::metrics::Metrics>,
    fleet: web::Data<Fleet>,
) -> HttpResponse {
    let gauges = pool
        .run(move |conn| {
            let now = chrono::Utc::now().naive_utc();
            let drivers = fleet.all(conn, now)?;
            crate::metrics::Gauges::load(conn, now, drivers).map_err(DbError::from)
        })
        .await;
    match gauges {
        Ok(gauges) => HttpResponse::Ok()
            .content_type(crate::metrics::CONTENT_TYPE)
            .body(metrics.render(&gauges)),
        Err(error) => {
            tracing::warn!(%error, "metrics unavailable");
            HttpResponse::ServiceUnavailable()
                .content_type("text/plain")
                .body("database unreachable")
        }
    }
}
