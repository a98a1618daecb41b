//! The driver API: enrollment with a one-time token, then heartbeats (and, later, jobs) with the
//! machine's own credential in `Authorization: Bearer gd_…`.

use std::future::{Ready, ready};
use std::time::{Duration, Instant};

use futures_util::future::select;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::body::read_json;
use super::error::ApiError;
use crate::config::Settings;
use crate::db::Pool;
use crate::enrollment::{self, EnrollError};
use crate::machines::{self, CredentialRejection, Machine, MachineProfile};
use crate::metrics::Metrics;
use crate::runs::dispatch::{self, Dispatcher, Signal};
use crate::runs::{self, Outcome};
use crate::secret::{Secret, SecretKind};

/// A machine credential that passed its checksum; the database has not been asked yet.
pub struct Credential(Secret);

impl FromRequest for Credential {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let parsed = match req.headers().get(header::AUTHORIZATION) {
            None => Err(ApiError::MissingCredential),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .and_then(|token| Secret::parse(SecretKind::MachineCredential, token.trim()).ok())
                .map(Credential)
                .ok_or(ApiError::MalformedCredential),
        };
        ready(parsed)
    }
}

impl Credential {
    /// Authenticates the machine and records the contact (and a reported status) in one statement.
    pub async fn touch(
        &self,
        pool: &Pool,
        reported_status: Option<&'static str>,
    ) -> Result<Machine, ApiError> {
        let hash = self.0.hash();
        let now = chrono::Utc::now().naive_utc();
        let found = pool
            .run(move |conn| {
                machines::touch(conn, &hash, reported_status, now).map_err(ApiError::from)
            })
            .await?;
        found.map_err(|rejection| match rejection {
            CredentialRejection::Unknown => ApiError::InvalidCredential,
            CredentialRejection::Removed => ApiError::MachineRemoved,
        })
    }
}

#[derive(Deserialize)]
pub struct EnrollRequest {
    token: String,
    name: String,
    #[serde(default)]
    os_version: String,
    #[serde(default)]
    ip_address: Option<String>,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    driver_version: String,
}

pub async fn enroll(
    req: HttpRequest,
    pool: web::Data<Pool>,
    settings: web::Data<Settings>,
    body: web::Json<EnrollRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let token = Secret::parse(SecretKind::EnrollmentToken, body.token.trim())
        .map_err(|_| ApiError::MalformedToken)?;
    let profile = MachineProfile::parse(
        &body.name,
        &body.os_version,
        body.ip_address.as_deref(),
        req.peer_addr().map(|a| a.ip()),
        &body.capabilities,
        &body.driver_version,
    )
    .map_err(ApiError::InvalidRequest)?;
    let enrolled = pool
        .run(move |conn| {
            enrollment::enroll(conn, &token, &profile).map_err(|e| match e {
                EnrollError::InvalidToken => ApiError::InvalidToken,
                EnrollError::TokenUsed => ApiError::TokenUsed,
                EnrollError::TokenExpired => ApiError::TokenExpired,
                EnrollError::TokenRevoked => ApiError::TokenRevoked,
                EnrollError::Query(e) => e.into(),
            })
        })
        .await?;
    tracing::info!(machine_id = enrolled.machine.id, organization = %enrolled.organization.slug, "machine enrolled");
    Ok(HttpResponse::Created().json(serde_json::json!({
        "machine_id": enrolled.machine.id,
        "credential": enrolled.credential.expose(),
        "organization": {
            "id": enrolled.organization.id,
            "slug": enrolled.organization.slug,
            "name": enrolled.organization.name,
        },
        "heartbeat_interval_seconds": settings.heartbeat_secs,
    })))
}

#[derive(Deserialize)]
pub struct HeartbeatRequest {
    status: String,
    #[serde(default)]
    #[allow(dead_code)]
    current_run_id: Option<String>,
}

pub async fn heartbeat(
    credential: Credential,
    pool: web::Data<Pool>,
    settings: web::Data<Settings>,
    body: web::Json<HeartbeatRequest>,
) -> Result<HttpResponse, ApiError> {
    let status = match body.status.as_str() {
        "idle" => "idle",
        "busy" => "busy",
        _ => {
            return Err(ApiError::InvalidRequest(
                "status must be \"idle\" or \"busy\".".into(),
            ));
        }
    };
    let machine = credential.touch(&pool, Some(status)).await?;
    let cancel = match machine.current_run_id {
        Some(_) => {
            pool.run(move |conn| machines::cancelled_runs(conn, &machine).map_err(ApiError::from))
                .await?
        }
        None => Vec::new(),
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "heartbeat_interval_seconds": settings.heartbeat_secs,
        "cancel": cancel,
    })))
}

#[derive(Deserialize, Default)]
struct ClaimRequest {
    #[serde(default)]
    wait_seconds: Option<u64>,
}

/// Longest a claim may wait for a run.
const MAX_CLAIM_WAIT: u64 = 30;
/// A waiting claim also looks every so often, in case a wake-up from another replica was missed.
const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// `POST /api/v1/driver/jobs/claim`: the next run this machine can run, waiting up to `wait_seconds`
/// for one. A waiting driver sleeps on a signal: no thread, no connection, no polling loop.
pub async fn claim(
    req: HttpRequest,
    credential: Credential,
    payload: web::Payload,
    pool: web::Data<Pool>,
    dispatcher: web::Data<Dispatcher>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    let body: ClaimRequest = read_json(&req, payload).await?;
    let wait = body.wait_seconds.unwrap_or(0);
    if wait > MAX_CLAIM_WAIT {
        return Err(ApiError::InvalidRequest(format!(
            "wait_seconds must be 0 to {MAX_CLAIM_WAIT}."
        )));
    }
    let machine = credential.touch(&pool, None).await?;
    let deadline = Instant::now() + Duration::from_secs(wait);
    let signal = dispatcher.signal(machine.organization_id, Signal::Queued);
    loop {
        let notified = signal.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        let for_claim = machine.clone();
        let claimed = pool
            .run(move |conn| {
                runs::claim::claim(conn, &for_claim, chrono::Utc::now().naive_utc())
                    .map_err(ApiError::from)
            })
            .await?;
        if let Some(run) = claimed {
            if let Some(started) = run.started_at {
                metrics.observe_wait((started - run.created_at).as_seconds_f64().max(0.0));
            }
            return Ok(HttpResponse::Ok().json(run.to_json()));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(HttpResponse::NoContent().finish());
        }
        let sleep = std::pin::pin!(tokio::time::sleep(remaining.min(RECHECK_EVERY)));
        let _ = select(notified, sleep).await;
    }
}

#[derive(Deserialize)]
struct CompleteRequest {
    status: String,
    #[serde(default)]
    result: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<RunErrorBody>,
}

#[derive(Deserialize)]
struct RunErrorBody {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

/// `POST /api/v1/driver/jobs/{runId}/complete`: the run's outcome; the machine is free again.
pub async fn complete(
    req: HttpRequest,
    credential: Credential,
    run_id: web::Path<String>,
    payload: web::Payload,
    pool: web::Data<Pool>,
    dispatcher: web::Data<Dispatcher>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    let body: CompleteRequest = read_json(&req, payload).await?;
    let succeeded = match body.status.as_str() {
        "completed" => true,
        "failed" => false,
        _ => {
            return Err(ApiError::InvalidRequest(
                "status must be \"completed\" or \"failed\".".into(),
            ));
        }
    };
    let error = body.error.map(|e| {
        let kind = if e.kind.trim().is_empty() {
            "failed".to_owned()
        } else {
            e.kind.chars().take(100).collect()
        };
        (kind, e.message.chars().take(4000).collect::<String>())
    });
    let outcome = Outcome {
        succeeded,
        result: body.result,
        error,
    };
    let machine = credential.touch(&pool, None).await?;
    let organization_id = machine.organization_id;
    let run = pool
        .run(move |conn| {
            let run =
                runs::complete(conn, machine.id, &run_id, &outcome).map_err(ApiError::from)?;
            dispatch::publish(conn, organization_id, Signal::Finished)?;
            Ok::<_, ApiError>(run)
        })
        .await?;
    metrics.count_finished(&run.status);
    dispatcher.announce(organization_id, Signal::Finished);
    Ok(HttpResponse::Ok().json(run.to_json()))
}

/// `POST /api/v1/driver/jobs/{runId}/release`: the driver is stopping and gives the run back to the
/// queue (an addition to the contract's driver API, used by `granite driver` on a second Ctrl-C).
pub async fn release(
    credential: Credential,
    run_id: web::Path<String>,
    pool: web::Data<Pool>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    let machine = credential.touch(&pool, None).await?;
    let organization_id = machine.organization_id;
    let run = pool
        .run(move |conn| {
            let run = runs::release(conn, machine.id, &run_id).map_err(ApiError::from)?;
            dispatch::publish(conn, organization_id, Signal::Queued)?;
            Ok::<_, ApiError>(run)
        })
        .await?;
    dispatcher.announce(organization_id, Signal::Queued);
    Ok(HttpResponse::Ok().json(run.to_json()))
}
