//! `GET /livez`: the process is up (no database). `GET /healthz`: this server can serve — the
//! database takes a read and a write and has the schema this build expects, all within a few seconds.
//! Each check is listed with what it found, so a failing probe says which part failed.

use std::time::Duration;

use actix_web::{HttpResponse, web};

use crate::db::readiness::{self, Check};
use crate::db::{DbError, Pool};

/// The longest `/healthz` waits for the database.
const WITHIN: Duration = Duration::from_secs(3);

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

pub async fn check(pool: web::Data<Pool>) -> HttpResponse {
    let checked = tokio::time::timeout(
        WITHIN,
        pool.run(|conn| Ok::<_, DbError>(readiness::check(conn))),
    )
    .await;
    let checks = match checked {
        Ok(Ok(checks)) => checks,
        Ok(Err(error)) => vec![Check {
            name: "connection",
            outcome: Err(format!("no database connection: {error}")),
        }],
        Err(_) => vec![Check {
            name: "connection",
            outcome: Err(format!("the database did not answer within {WITHIN:?}")),
        }],
    };
    let ready = checks.iter().all(|c| c.outcome.is_ok());
    let body: String = checks
        .iter()
        .map(|c| match &c.outcome {
            Ok(()) => format!("{}: ok\n", c.name),
            Err(problem) => format!("{}: FAILED: {problem}\n", c.name),
        })
        .collect();
    if ready {
        HttpResponse::Ok()
            .content_type("text/plain")
            .body(format!("ok\n{body}"))
    } else {
        tracing::warn!(checks = %body.trim_end().replace('\n', "; "), "not ready");
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("not ready\n{body}"))
    }
}
