//! The driver API: enrollment with a one-time token, then heartbeats, claims and completions with the
//! machine's own credential in `Authorization: Bearer gd_…`.

use std::future::{Ready, ready};
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};

use super::body::{ClientSlot, Json, RunIdPath};
use super::error::ApiError;
use crate::config::Settings;
use crate::db::Pool;
use crate::enrollment::{self, EnrollError};
use crate::machines::contacts::Contacts;
use crate::machines::fleet::Fleet;
use crate::machines::memory::Presences;
use crate::machines::{self, DriverAnnouncement, Heard, Machine, MachineProfile};
use crate::metrics::Metrics;
use crate::runs::claims::ClaimsInFlight;
use crate::runs::dispatch::Dispatcher;
use crate::runs::group_commit::GroupCommit;
use crate::runs::{self, Outcome, leases};
use crate::secret::{Secret, SecretKind};
use crate::status::{ReportedStatus, RunStatus};
use crate::wire::driver::{
    ClaimRequest, CompleteRequest, EnrollRequest, EnrollResponse, HeartbeatRequest,
    HeartbeatResponse,
};
use crate::wire::{ErrorBody, RunObject};

/// The hash of a machine credential that passed its checksum; the database has not been asked yet.
pub struct Credential {
    hash: String,
}

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
                .map(|secret| Credential {
                    hash: secret.hash(),
                })
                .ok_or(ApiError::MalformedCredential),
        };
        ready(parsed)
    }
}

impl Credential {
    /// What a heartbeat reporting `status` and `reported` finds, from memory or by one read (then
    /// remembered); writes nothing (a heartbeat's steady state).
    pub async fn hear(
        &self,
        pool: &Pool,
        memory: &Presences,
        status: ReportedStatus,
        reported: Option<&str>,
        now: chrono::NaiveDateTime,
        offline_after: chrono::Duration,
    ) -> Result<Heard, ApiError> {
        if let Some(heard) = memory.hear(&self.hash, status, reported, now, offline_after) {
            return Ok(heard);
        }
        let ticket = memory.ticket();
        let hash = self.hash.clone();
        let presence = pool
            .run(move |conn| machines::presence(conn, &hash).map_err(ApiError::from))
            .await?
            .ok_or(ApiError::InvalidCredential)?;
        let heard = presence.heard(status, reported, now, offline_after);
        memory.remember(ticket, self.hash.clone(), presence);
        Ok(heard)
    }

    /// Authenticates the machine and writes the reported status and contact in one statement (a
    /// heartbeat that changed something).
    pub async fn touch(
        &self,
        pool: &Pool,
        reported_status: ReportedStatus,
    ) -> Result<Machine, ApiError> {
        let hash = self.hash.clone();
        let now = chrono::Utc::now().naive_utc();
        pool.run(move |conn| {
            machines::touch(conn, &hash, reported_status, now).map_err(ApiError::from)
        })
        .await?
        .map_err(ApiError::from)
    }

    /// Authenticates the machine by one read; the contact joins the next batch of contacts.
    pub async fn identify(&self, pool: &Pool, contacts: &Contacts) -> Result<Machine, ApiError> {
        let hash = self.hash.clone();
        let machine = pool
            .run(move |conn| machines::identify(conn, &hash).map_err(ApiError::from))
            .await??;
        contacts.record(machine.id, chrono::Utc::now().naive_utc());
        Ok(machine)
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/driver/enroll",
    operation_id = "enrollMachine",
    tag = "driver",
    request_body = EnrollRequest,
    responses(
        (status = 201, description = "Enrolled: the credential is shown this once.", body = EnrollResponse),
        (status = 400, description = "A bad body; nothing was written.", body = ErrorBody),
        (status = 401, description = "malformed_token or invalid_token.", body = ErrorBody),
        (status = 410, description = "token_used, token_expired or token_revoked.", body = ErrorBody),
        (status = 429, description = "rate_limited: this address has too many requests in flight; retry after Retry-After seconds.", body = ErrorBody),
    )
)]
pub async fn enroll(
    _slot: ClientSlot,
    req: HttpRequest,
    pool: web::Data<Pool>,
    settings: web::Data<Settings>,
    Json(body): Json<EnrollRequest>,
) -> Result<HttpResponse, ApiError> {
    let token = Secret::parse(SecretKind::EnrollmentToken, body.token.trim())
        .map_err(|_| ApiError::MalformedToken)?;
    let profile = MachineProfile::parse(
        &body.name,
        &body.os_version,
        body.ip_address.as_deref(),
        crate::ops::client_address::client_ip(&req),
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
    Ok(HttpResponse::Created().json(EnrollResponse {
        machine_id: enrolled.machine.id,
        credential: enrolled.credential.expose().to_owned(),
        organization: enrolled.organization.to_wire(),
        heartbeat_interval_seconds: settings.heartbeat_secs,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/driver/heartbeat",
    operation_id = "heartbeat",
    tag = "driver",
    security(("machine_credential" = [])),
    request_body = HeartbeatRequest,
    responses(
        (status = 200, description = "Contact recorded. A run the server gave this machine that current_run_id does not name goes back to the queue; `cancel` lists the reported run if it is no longer this machine's to run.", body = HeartbeatResponse),
        (status = 400, description = "A bad body.", body = ErrorBody),
        (status = 401, description = "No valid credential, or machine_removed.", body = ErrorBody),
    )
)]
// Each argument is an extractor actix fills in; grouping them would only hide what the handler uses.
#[allow(clippy::too_many_arguments)]
pub async fn heartbeat(
    credential: Credential,
    pool: web::Data<Pool>,
    settings: web::Data<Settings>,
    dispatcher: web::Data<Dispatcher>,
    contacts: web::Data<Contacts>,
    memory: web::Data<Presences>,
    fleet: web::Data<Fleet>,
    Json(body): Json<HeartbeatRequest>,
) -> Result<HttpResponse, ApiError> {
    let now = chrono::Utc::now().naive_utc();
    let reply = |cancel, paused| {
        HttpResponse::Ok().json(HeartbeatResponse {
            heartbeat_interval_seconds: settings.heartbeat_secs,
            cancel,
            paused,
        })
    };
    let announced = DriverAnnouncement::parse(
        body.capabilities.as_deref(),
        body.os_version.as_deref(),
        body.driver_version.as_deref(),
        body.started_at.map(|at| at.naive_utc()),
        now,
    )
    .map_err(|(field, message)| ApiError::invalid_field(field, message))?;
    let reported = body.current_run_id;
    // The steady state: the machine as remembered (or one read), and the contact joins the next batch.
    if announced.is_empty() {
        let heard = credential
            .hear(
                &pool,
                &memory,
                body.status,
                reported.as_deref(),
                now,
                settings.offline_after(),
            )
            .await?;
        match heard {
            Heard::Removed => return Err(ApiError::MachineRemoved),
            Heard::Unchanged { machine_id, paused } => {
                contacts.record(machine_id, now);
                return Ok(reply(Vec::new(), paused));
            }
            Heard::Changed => {}
        }
    }
    let machine = credential.touch(&pool, body.status).await?;
    // Written at once: what was remembered (its contact time, at least) is out of date, and the
    // machine may be back in contact.
    memory.forget([machine.id]);
    fleet.changed();
    let paused = machine.paused_at.is_some();
    let cancel = if announced.is_empty() && machine.current_run_id.is_none() && reported.is_none() {
        Vec::new()
    } else {
        dispatcher
            .run(&pool, move |conn, changes| {
                machines::announce(conn, machine.id, &announced)?;
                leases::reconcile(conn, &machine, reported.as_deref(), now, changes)
                    .map_err(ApiError::from)
            })
            .await?
    };
    Ok(reply(cancel, paused))
}

/// Longest a claim may wait for a run.
const MAX_CLAIM_WAIT: u64 = 30;

/// `POST /api/v1/driver/jobs/claim`: the next run this machine can run, waiting up to `wait_seconds`
/// for one.
#[utoipa::path(
    post,
    path = "/api/v1/driver/jobs/claim",
    operation_id = "claimJob",
    tag = "driver",
    security(("machine_credential" = [])),
    request_body = ClaimRequest,
    responses(
        (status = 200, description = "A run for this machine, now running on it.", body = RunObject),
        (status = 204, description = "No run this machine can take within wait_seconds (always, while an admin has paused the machine)."),
        (status = 400, description = "A bad body.", body = ErrorBody),
        (status = 401, description = "No valid credential, or machine_removed.", body = ErrorBody),
        (status = 409, description = "claim_in_progress: this machine already has a claim waiting.", body = ErrorBody),
    )
)]
// Each argument is an extractor actix fills in; grouping them would only hide what the handler uses.
#[allow(clippy::too_many_arguments)]
pub async fn claim(
    credential: Credential,
    Json(body): Json<ClaimRequest>,
    pool: web::Data<Pool>,
    dispatcher: web::Data<Dispatcher>,
    metrics: web::Data<Metrics>,
    claims: web::Data<ClaimsInFlight>,
    settings: web::Data<Settings>,
    contacts: web::Data<Contacts>,
) -> Result<HttpResponse, ApiError> {
    let wait = body.wait_seconds.unwrap_or(0);
    let offline_after = settings.offline_after();
    if wait > MAX_CLAIM_WAIT {
        return Err(ApiError::invalid_field(
            "wait_seconds",
            format!("wait_seconds must be 0 to {MAX_CLAIM_WAIT}."),
        ));
    }
    let machine = credential.identify(&pool, &contacts).await?;
    let _claiming =
        ClaimsInFlight::begin(&claims.into_inner(), machine.id).ok_or(ApiError::ClaimInProgress)?;
    if machine.current_run_id.is_some() {
        let holder = machine.clone();
        dispatcher
            .run(&pool, move |conn, changes| {
                let now = chrono::Utc::now().naive_utc();
                leases::release_before_claim(conn, &holder, now, changes).map_err(ApiError::from)
            })
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(wait);
    let claimed = dispatcher
        .wait_for_run(&machine, deadline, || {
            let (pool, machine) = (pool.clone(), machine.clone());
            async move {
                pool.run(move |conn| {
                    let now = chrono::Utc::now().naive_utc();
                    runs::claim::claim(conn, &machine, now, now - offline_after)
                        .map_err(ApiError::from)
                })
                .await
            }
        })
        .await?;
    let Some(run) = claimed else {
        return Ok(HttpResponse::NoContent().finish());
    };
    if let Some(started) = run.started_at {
        metrics.observe_wait((started - run.created_at).as_seconds_f64().max(0.0));
    }
    Ok(HttpResponse::Ok().json(run.to_wire()))
}

/// `POST /api/v1/driver/jobs/{runId}/complete`: the run's outcome; the machine is free again.
#[utoipa::path(
    post,
    path = "/api/v1/driver/jobs/{run_id}/complete",
    operation_id = "completeJob",
    tag = "driver",
    security(("machine_credential" = [])),
    params(("run_id" = String, Path, description = "The run's id, run_…")),
    request_body = CompleteRequest,
    responses(
        (status = 200, description = "Recorded (a run cancelled while it ran stays cancelled).", body = RunObject),
        (status = 400, description = "A bad body; nothing was written.", body = ErrorBody),
        (status = 401, description = "No valid credential, or machine_removed.", body = ErrorBody),
        (status = 404, description = "This machine holds no such run.", body = ErrorBody),
        (status = 409, description = "The run has already finished.", body = ErrorBody),
    )
)]
pub async fn complete(
    credential: Credential,
    RunIdPath(run_id): RunIdPath,
    Json(body): Json<CompleteRequest>,
    pool: web::Data<Pool>,
    reports: web::Data<GroupCommit>,
    contacts: web::Data<Contacts>,
) -> Result<HttpResponse, ApiError> {
    let outcome = Outcome::from_wire(body);
    let machine = credential.identify(&pool, &contacts).await?;
    let organization_id = machine.organization_id;
    let run = reports
        .run(move |conn, changes| {
            let run = runs::complete(conn, machine.id, &run_id, &outcome)?;
            // A run cancelled while it ran was announced when it was cancelled.
            if run.status != RunStatus::Cancelled {
                changes.finished(organization_id, run.status);
            }
            Ok::<_, ApiError>(run)
        })
        .await?;
    Ok(HttpResponse::Ok().json(run.to_wire()))
}

/// `POST /api/v1/driver/jobs/{runId}/release`: the driver is stopping and gives the run back to the
/// queue (an addition to the contract's driver API, used by `granite driver` on a second Ctrl-C).
#[utoipa::path(
    post,
    path = "/api/v1/driver/jobs/{run_id}/release",
    operation_id = "releaseJob",
    tag = "driver",
    security(("machine_credential" = [])),
    params(("run_id" = String, Path, description = "The run's id, run_…")),
    responses(
        (status = 200, description = "The run is queued again; this attempt does not count.", body = RunObject),
        (status = 401, description = "No valid credential, or machine_removed.", body = ErrorBody),
        (status = 404, description = "This machine holds no such run.", body = ErrorBody),
        (status = 409, description = "The run has already finished.", body = ErrorBody),
    )
)]
pub async fn release(
    credential: Credential,
    RunIdPath(run_id): RunIdPath,
    pool: web::Data<Pool>,
    dispatcher: web::Data<Dispatcher>,
    contacts: web::Data<Contacts>,
) -> Result<HttpResponse, ApiError> {
    let machine = credential.identify(&pool, &contacts).await?;
    let organization_id = machine.organization_id;
    let run = dispatcher
        .run(&pool, move |conn, changes| {
            let run = runs::release(conn, machine.id, &run_id)?;
            changes.queued_needing(organization_id, &run.requires);
            Ok::<_, ApiError>(run)
        })
        .await?;
    Ok(HttpResponse::Ok().json(run.to_wire()))
}
