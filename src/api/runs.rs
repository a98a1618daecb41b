//! The public runs API: start an automation (`POST /api/{org}/{endpoint}`), read a run, cancel it.

use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::future::select;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::ApiCaller;
use super::body::read_json;
use super::error::ApiError;
use crate::db::Pool;
use crate::machines::parse_capabilities;
use crate::runs::dispatch::{self, Dispatcher, Signal};
use crate::runs::{self, NewRun, Run};

const MAX_WAIT_SECONDS: u64 = 300;
/// Waiters also look every so often, in case a wake-up from another replica was missed.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Deserialize, Default)]
struct RunOptions {
    requires: Option<String>,
    priority: Option<String>,
    wait: Option<String>,
    timeout: Option<String>,
}

struct Options {
    requires: Vec<String>,
    priority: i32,
    wait: Option<Duration>,
}

fn parse_options(query: &str) -> Result<Options, ApiError> {
    let raw: RunOptions = serde_urlencoded::from_str(query)
        .map_err(|_| ApiError::InvalidRequest("The query string could not be read.".into()))?;
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
        .map_err(|e| ApiError::InvalidRequest(format!("requires: {e}.")))?;
    let priority = match raw.priority.as_deref() {
        None | Some("") => 0,
        Some(text) => text
            .parse::<i32>()
            .ok()
            .filter(|p| (-1_000_000..=1_000_000).contains(p))
            .ok_or_else(|| {
                ApiError::InvalidRequest(
                    "priority must be a whole number between -1000000 and 1000000.".into(),
                )
            })?,
    };
    let wait = match raw.wait.as_deref() {
        None | Some("") | Some("false") => None,
        Some("true") => Some(match raw.timeout.as_deref() {
            None | Some("") => Duration::from_secs(MAX_WAIT_SECONDS),
            Some(text) => Duration::from_secs(
                text.parse::<u64>()
                    .ok()
                    .filter(|t| (1..=MAX_WAIT_SECONDS).contains(t))
                    .ok_or_else(|| {
                        ApiError::InvalidRequest("timeout must be 1 to 300 seconds.".into())
                    })?,
            ),
        }),
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "wait must be true or false.".into(),
            ));
        }
    };
    Ok(Options {
        requires,
        priority,
        wait,
    })
}

/// `POST /api/{org}/{endpoint}`: queue a run of `endpoint` with the body as its parameters.
pub async fn start(
    req: HttpRequest,
    ApiCaller(caller): ApiCaller,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    pool: web::Data<Pool>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    let (org, endpoint) = path.into_inner();
    if org != caller.organization.slug {
        return Err(ApiError::NotFound);
    }
    let endpoint = runs::parse_endpoint(&endpoint).map_err(ApiError::InvalidRequest)?;
    let options = parse_options(req.query_string())?;
    let parameters: Value = read_json(&req, payload).await?;
    if !parameters.is_object() {
        return Err(ApiError::InvalidRequest(
            "The body must be a JSON object of parameters.".into(),
        ));
    }
    let new = NewRun {
        endpoint,
        parameters,
        requires: options.requires,
        priority: options.priority,
    };
    let (organization_id, key_id) = (caller.organization.id, caller.key.id);
    let local = dispatcher.clone();
    let run = pool
        .run(move |conn| {
            let run = runs::enqueue(conn, organization_id, key_id, &new)?;
            // Committed: wake this server's waiting drivers first, then tell the other replicas.
            local.announce(organization_id, Signal::Queued);
            dispatch::publish(conn, organization_id, Signal::Queued)?;
            Ok::<_, ApiError>(run)
        })
        .await?;
    match options.wait {
        None => Ok(HttpResponse::Accepted().json(json!({
            "runId": run.public_id,
            "status": "queued",
            "message": format!("Run of {} queued.", run.endpoint),
        }))),
        Some(timeout) => wait_for_finish(&pool, &dispatcher, run, timeout).await,
    }
}

/// Waits for the run to finish, holding neither a worker thread nor a database connection while it sleeps.
async fn wait_for_finish(
    pool: &Pool,
    dispatcher: &Dispatcher,
    run: Run,
    timeout: Duration,
) -> Result<HttpResponse, ApiError> {
    let deadline = Instant::now() + timeout;
    let signal = dispatcher.signal(run.organization_id, Signal::Finished);
    let (organization_id, public_id) = (run.organization_id, run.public_id.clone());
    loop {
        let notified = signal.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        let id = public_id.clone();
        let current = pool
            .run(move |conn| runs::find(conn, organization_id, &id).map_err(ApiError::from))
            .await?
            .ok_or(ApiError::NotFound)?;
        if current.is_finished() {
            return Ok(HttpResponse::Ok().json(current.to_json()));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(HttpResponse::Accepted().json(current.to_json()));
        }
        let sleep = std::pin::pin!(tokio::time::sleep(remaining.min(RECHECK_EVERY)));
        let _ = select(notified, sleep).await;
    }
}

/// `GET /api/agent-runs/{runId}`.
pub async fn show(
    ApiCaller(caller): ApiCaller,
    run_id: web::Path<String>,
    pool: web::Data<Pool>,
) -> Result<HttpResponse, ApiError> {
    let organization_id = caller.organization.id;
    let run = pool
        .run(move |conn| runs::find(conn, organization_id, &run_id).map_err(ApiError::from))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(run.to_json()))
}

/// `POST /api/agent-runs/{runId}/cancel`.
pub async fn cancel(
    ApiCaller(caller): ApiCaller,
    run_id: web::Path<String>,
    pool: web::Data<Pool>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    let organization_id = caller.organization.id;
    let run = pool
        .run(move |conn| {
            let run = runs::cancel(conn, organization_id, &run_id).map_err(ApiError::from)?;
            dispatch::publish(conn, organization_id, Signal::Finished)?;
            Ok::<_, ApiError>(run)
        })
        .await?;
    dispatcher.announce(organization_id, Signal::Finished);
    Ok(HttpResponse::Ok().json(run.to_json()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_parsed_and_bounded() {
        let o = parse_options("requires=windows,chrome&priority=5&wait=true&timeout=20").unwrap();
        assert_eq!(o.requires, ["windows", "chrome"]);
        assert_eq!(o.priority, 5);
        assert_eq!(o.wait, Some(Duration::from_secs(20)));
        let defaults = parse_options("").unwrap();
        assert!(defaults.requires.is_empty() && defaults.priority == 0 && defaults.wait.is_none());
        assert_eq!(
            parse_options("wait=true").unwrap().wait,
            Some(Duration::from_secs(300))
        );
        for bad in [
            "priority=high",
            "timeout=301&wait=true",
            "wait=maybe",
            "requires=a%20b",
            "timeout=0&wait=true",
        ] {
            assert!(parse_options(bad).is_err(), "{bad}");
        }
    }
}
