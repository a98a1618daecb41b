//! One structured log line per request. Paths only: query strings can carry one-time codes, and bodies
//! and headers can carry secrets, so neither is logged.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use crate::metrics::Metrics;

pub async fn log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let result = next.call(req).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match &result {
        Ok(response) => {
            let status = response.status().as_u16();
            let route = response
                .request()
                .match_pattern()
                .unwrap_or_else(|| "unmatched".into());
            if let Some(metrics) = response.request().app_data::<web::Data<Metrics>>() {
                metrics.count_request(&route, status);
            }
            if path == "/healthz" {
                tracing::debug!(%method, %path, %route, status, elapsed_ms, "request");
            } else {
                tracing::info!(%method, %path, %route, status, elapsed_ms, "request");
            }
        }
        Err(error) => {
            let status = error.as_response_error().status_code().as_u16();
            tracing::info!(%method, %path, status, elapsed_ms, "request");
        }
    }
    result
}
