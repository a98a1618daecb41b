//! `GET /api/queue`: queue status of the key's organization.

use actix_web::{HttpResponse, web};

use super::auth::ApiCaller;
use super::error::ApiError;
use crate::db::Pool;
use crate::machines::fleet::Fleet;
use crate::queue::QueueStatus;
use crate::wire::ErrorBody;
use crate::wire::public::QueueStatusResponse;

#[utoipa::path(
    get,
    path = "/api/queue",
    operation_id = "getQueue",
    tag = "public",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Queue status now.", body = QueueStatusResponse),
        (status = 401, description = "No valid API key.", body = ErrorBody),
    )
)]
pub async fn show(
    ApiCaller(caller): ApiCaller,
    pool: web::Data<Pool>,
    fleet: web::Data<Fleet>,
) -> Result<HttpResponse, ApiError> {
    let organization_id = caller.organization.id;
    let status = pool
        .run(move |conn| {
            let now = chrono::Utc::now().naive_utc();
            let machines = fleet.of(conn, organization_id, now)?;
            QueueStatus::load(conn, organization_id, now, &machines).map_err(ApiError::from)
        })
        .await?;
    Ok(HttpResponse::Ok().json(QueueStatusResponse {
        jobs_queued: status.jobs_queued,
        jobs_running: status.jobs_running,
        avg_wait_seconds: status.avg_wait_seconds,
        oldest_queued_seconds: status.oldest_queued_seconds,
        active_drivers: status.active_drivers,
        busy_drivers: status.busy_drivers,
    }))
}
