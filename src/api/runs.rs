//! The public runs API: start an automation (`POST /api/{org}/{endpoint}`), read a run, cancel it.

use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value};

use super::auth::ApiCaller;
use super::body::{RunIdPath, parse_query, read_json};
use super::error::ApiError;
use crate::db::Pool;
use crate::machines::parse_capabilities;
use crate::runs::dispatch::{Dispatcher, Signal};
use crate::runs::intake::Intake;
use crate::runs::{self, NewRun, QueuedRow};
use crate::status::RunStatus;
use crate::wire::public::{QueuedResponse, StartRunQuery};
use crate::wire::{ErrorBody, RunObject};

const MAX_WAIT_SECONDS: u64 = 300;
const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1_000_000..=1_000_000;

/// The options of a start, checked.
struct Options {
    requires: Vec<String>,
    priority: i32,
    wait: Option<Duration>,
}

impl Options {
    fn parse(query: &str) -> Result<Self, ApiError> {
        let raw: StartRunQuery = parse_query(query)?;
        let requires: Vec<String> = raw
            .requires
            .as_deref()
            .map(|list| {
                list.split(',')
                    .map(str::to_owned)
                    .filter(|s| !s.trim().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let requires = parse_capabilities(&requires)
            .map_err(|e| ApiError::invalid_field("requires", format!("requires: {e}.")))?;
        let priority = raw.priority.unwrap_or(0);
        if !PRIORITY_RANGE.contains(&priority) {
            return Err(ApiError::invalid_field(
                "priority",
                "priority must be a whole number between -1000000 and 1000000.",
            ));
        }
        let wait = match raw.wait {
            Some(true) => {
                let timeout = raw.timeout.unwrap_or(MAX_WAIT_SECONDS);
                if !(1..=MAX_WAIT_SECONDS).contains(&timeout) {
                    return Err(ApiError::invalid_field(
                        "timeout",
                        "timeout must be 1 to 300 seconds.",
                    ));
                }
                Some(Duration::from_secs(timeout))
            }
            // Without wait=true the timeout means nothing, whatever it says.
            _ => None,
        };
        Ok(Self {
            requires,
            priority,
            wait,
        })
    }
}

/// `POST /api/{org}/{endpoint}`: queue a run of `endpoint` with the body as its parameters.
#[utoipa::path(
    post,
    path = "/api/{org}/{endpoint}",
    operation_id = "startRun",
    tag = "public",
    security(("api_key" = [])),
    params(
        ("org" = String, Path, description = "The organization's slug (see GET /api/me)."),
        ("endpoint" = String, Path, description = "The automation: 1–100 characters of a-z, 0-9 and -."),
        StartRunQuery,
    ),
    request_body(content = Object, description = "The run's parameters: any JSON object (may be empty)."),
    responses(
        (status = 202, description = "Queued (or, with wait=true, still not finished at the timeout: the run object).", body = QueuedResponse),
        (status = 200, description = "With wait=true: the run finished.", body = RunObject),
        (status = 400, description = "A bad endpoint, query or body; nothing was queued.", body = ErrorBody),
        (status = 401, description = "No valid API key.", body = ErrorBody),
        (status = 404, description = "Not the key's organization.", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB.", body = ErrorBody),
        (status = 415, description = "The body is not JSON.", body = ErrorBody),
    )
)]
pub async fn start(
    req: HttpRequest,
    ApiCaller(caller): ApiCaller,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    pool: web::Data<Pool>,
    dispatcher: web::Data<Dispatcher>,
    intake: web::Data<Intake>,
) -> Result<HttpResponse, ApiError> {
    let (org, endpoint) = path.into_inner();
    if org != caller.organization.slug {
        return Err(ApiError::NotFound);
    }
    let endpoint = runs::parse_endpoint(&endpoint).map_err(ApiError::InvalidRequest)?;
    let options = Options::parse(req.query_string())?;
    // Read only once the key and the organization are known good.
    let parameters: Map<String, Value> = read_json(&req, payload).await?;
    let new = NewRun {
        endpoint,
        parameters: Value::Object(parameters),
        requires: options.requires,
        priority: options.priority,
    };
    let organization_id = caller.organization.id;
    let row = QueuedRow::new(organization_id, caller.key.id, new);
    let message = format!("Run of {} queued.", row.endpoint());
    let run_id = row.public_id().to_owned();
    intake.enqueue(row).await?;
    let Some(timeout) = options.wait else {
        return Ok(HttpResponse::Accepted().json(QueuedResponse {
            message,
            run_id,
            status: RunStatus::Queued,
        }));
    };
    let find = || {
        let id = run_id.clone();
        let pool = pool.clone();
        async move {
            pool.run(move |conn| runs::find(conn, organization_id, &id).map_err(ApiError::from))
                .await?
                .ok_or(ApiError::NotFound)
        }
    };
    let finished = dispatcher
        .wait_until(
            organization_id,
            Signal::Finished,
            Instant::now() + timeout,
            || {
                let current = find();
                async move { Ok::<_, ApiError>(Some(current.await?).filter(|r| r.is_finished())) }
            },
        )
        .await?;
    Ok(match finished {
        Some(run) => HttpResponse::Ok().json(run.to_wire()),
        None => HttpResponse::Accepted().json(find().await?.to_wire()),
    })
}

/// `GET /api/agent-runs/{runId}`.
#[utoipa::path(
    get,
    path = "/api/agent-runs/{run_id}",
    operation_id = "getRun",
    tag = "public",
    security(("api_key" = [])),
    params(("run_id" = String, Path, description = "The run's id, run_…")),
    responses(
        (status = 200, description = "The run.", body = RunObject),
        (status = 401, description = "No valid API key.", body = ErrorBody),
        (status = 404, description = "No such run in the key's organization.", body = ErrorBody),
    )
)]
pub async fn show(
    ApiCaller(caller): ApiCaller,
    RunIdPath(run_id): RunIdPath,
    pool: web::Data<Pool>,
) -> Result<HttpResponse, ApiError> {
    let organization_id = caller.organization.id;
    let run = pool
        .run(move |conn| runs::find(conn, organization_id, &run_id).map_err(ApiError::from))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(run.to_wire()))
}

/// `POST /api/agent-runs/{runId}/cancel`.
#[utoipa::path(
    post,
    path = "/api/agent-runs/{run_id}/cancel",
    operation_id = "cancelRun",
    tag = "public",
    security(("api_key" = [])),
    params(("run_id" = String, Path, description = "The run's id, run_…")),
    responses(
        (status = 200, description = "Cancelled; a running run's machine is told in its next heartbeat.", body = RunObject),
        (status = 401, description = "No valid API key.", body = ErrorBody),
        (status = 404, description = "No such run in the key's organization.", body = ErrorBody),
        (status = 409, description = "The run has already finished.", body = ErrorBody),
    )
)]
pub async fn cancel(
    ApiCaller(caller): ApiCaller,
    RunIdPath(run_id): RunIdPath,
    pool: web::Data<Pool>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    let organization_id = caller.organization.id;
    let run = dispatcher
        .run(&pool, move |conn, changes| {
            let run = runs::cancel(conn, organization_id, &run_id)?;
            changes.finished(organization_id, run.status);
            Ok::<_, ApiError>(run)
        })
        .await?;
    Ok(HttpResponse::Ok().json(run.to_wire()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(error: ApiError) -> String {
        match error {
            ApiError::InvalidField { field, .. } => field,
            other => panic!("{other:?} names no field"),
        }
    }

    #[test]
    fn options_are_parsed_and_bounded() {
        let o = Options::parse("requires=windows,chrome&priority=5&wait=true&timeout=20").unwrap();
        assert_eq!(o.requires, ["windows", "chrome"]);
        assert_eq!(o.priority, 5);
        assert_eq!(o.wait, Some(Duration::from_secs(20)));
        let defaults = Options::parse("").unwrap();
        assert!(defaults.requires.is_empty() && defaults.priority == 0 && defaults.wait.is_none());
        assert_eq!(
            Options::parse("wait=true").unwrap().wait,
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            Options::parse("priority=&wait=&timeout=").unwrap().priority,
            0,
            "empty values are the defaults"
        );
        assert!(Options::parse("timeout=600").unwrap().wait.is_none());
        for (bad, named) in [
            ("priority=high", "priority"),
            ("priority=1000001", "priority"),
            ("timeout=301&wait=true", "timeout"),
            ("wait=maybe", "wait"),
            ("requires=a%20b", "requires"),
            ("timeout=0&wait=true", "timeout"),
        ] {
            assert_eq!(field(Options::parse(bad).err().expect(bad)), named, "{bad}");
        }
    }
}
