//! `GET /healthz`: the process is up and the database answers.

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
