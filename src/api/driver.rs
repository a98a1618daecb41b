//! The driver API: enrollment with a one-time token, then heartbeats (and, later, jobs) with the
//! machine's own credential in `Authorization: Bearer gd_…`.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::error::ApiError;
use crate::config::Settings;
use crate::db::Pool;
use crate::enrollment::{self, EnrollError};
use crate::machines::{self, CredentialRejection, Machine, MachineProfile};
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
    pub async fn touch(&self, pool: &Pool, reported_status: Option<&'static str>) -> Result<Machine, ApiError> {
        let hash = self.0.hash();
        let now = chrono::Utc::now().naive_utc();
        let found = pool.run(move |conn| machines::touch(conn, &hash, reported_status, now).map_err(ApiError::from)).await?;
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
    let token = Secret::parse(SecretKind::EnrollmentToken, body.token.trim()).map_err(|_| ApiError::MalformedToken)?;
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
        _ => return Err(ApiError::InvalidRequest("status must be \"idle\" or \"busy\".".into())),
    };
    let machine = credential.touch(&pool, Some(status)).await?;
    let cancel = match machine.current_run_id {
        Some(_) => pool.run(move |conn| machines::cancelled_runs(conn, machine.id).map_err(ApiError::from)).await?,
        None => Vec::new(),
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "heartbeat_interval_seconds": settings.heartbeat_secs,
        "cancel": cancel,
    })))
}
