//! The organization's jobs (runs): the list (newest first, filtered by status, a page at a time) and
//! each run's page, with every attempt, Cancel and Retry.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::NaiveDateTime;
use diesel::QueryResult;
use serde::Deserialize;

use crate::db::{DbConnection, Pool};
use crate::machines::{self, MachineName};
use crate::runs::dispatch::Dispatcher;
use crate::runs::{self, Run, RunError, RunSummary};
use crate::status::RunStatus;
use crate::web::access::{CurrentUser, Member, Viewer};
use crate::web::actor;
use crate::web::error::WebError;
use crate::web::middleware::session::DashboardSession;
use crate::web::view::filters;
use crate::web::view::layout::{Layout, render};
use crate::web::view::time::Moment;

const PAGE_SIZE: i64 = 50;

/// A run as the jobs list and a machine's history show it.
pub struct JobRow {
    pub public_id: String,
    pub endpoint: String,
    pub status: RunStatus,
    pub queued: Moment,
    pub waited: String,
    pub ran: String,
    pub machine_id: Option<i64>,
    /// "win-07", or "win-07 (removed)".
    pub machine: Option<String>,
    pub error: Option<String>,
}

/// Waited or ran, in seconds, or a dash while it has not happened.
fn seconds(from: NaiveDateTime, to: Option<NaiveDateTime>) -> String {
    match to {
        Some(to) => format!("{:.1} s", (to - from).as_seconds_f64().max(0.0)),
        None => "—".to_owned(),
    }
}

fn machine_label(name: &MachineName) -> String {
    if name.removed {
        format!("{} (removed)", name.name)
    } else {
        name.name.clone()
    }
}

impl JobRow {
    pub fn new(run: RunSummary, names: &HashMap<i64, MachineName>, now: NaiveDateTime) -> Self {
        Self {
            waited: seconds(run.created_at, run.started_at),
            ran: run
                .started_at
                .map(|s| seconds(s, run.finished_at))
                .unwrap_or_else(|| "—".into()),
            queued: Moment::new(run.created_at, now),
            public_id: run.public_id,
            endpoint: run.endpoint,
            status: run.status,
            machine: run
                .machine_id
                .and_then(|id| names.get(&id))
                .map(machine_label),
            machine_id: run.machine_id,
            error: run.error_message,
        }
    }

    /// The rows of these runs, with their machines' names in one query.
    pub fn load(
        conn: &mut DbConnection,
        summaries: Vec<RunSummary>,
        now: NaiveDateTime,
    ) -> QueryResult<Vec<Self>> {
        let ids: Vec<i64> = summaries.iter().filter_map(|r| r.machine_id).collect();
        let names = machines::names(conn, &ids)?;
        Ok(summaries
            .into_iter()
            .map(|run| Self::new(run, &names, now))
            .collect())
    }
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    layout: Layout,
    user: CurrentUser,
    rows: Vec<JobRow>,
    statuses: [RunStatus; 5],
    selected: String,
    matching: runs::Matching,
    page: i64,
    pages: i64,
    /// The page asked for, as asked (past the end, the page says so and offers the last one).
    requested_page: i64,
}

#[derive(Deserialize)]
pub struct JobsQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    page: Option<i64>,
}

pub async fn page(
    Viewer(user): Viewer,
    session: actix_session::Session,
    pool: web::Data<Pool>,
    query: web::Query<JobsQuery>,
) -> Result<HttpResponse, WebError> {
    let query = query.into_inner();
    let status = RunStatus::parse(&query.status);
    let requested_page = query.page.unwrap_or(1).max(1);
    let page = query
        .page
        .unwrap_or(1)
        .clamp(1, runs::LIST_COUNT_CAP / PAGE_SIZE);
    let organization_id = user.organization.id;
    let now = chrono::Utc::now().naive_utc();
    let (rows, matching) = pool
        .run(move |conn| {
            let (summaries, matching) = runs::list(
                conn,
                organization_id,
                status,
                (page - 1) * PAGE_SIZE,
                PAGE_SIZE,
            )?;
            Ok::<_, WebError>((JobRow::load(conn, summaries, now)?, matching))
        })
        .await?;
    let layout = Layout::new("Jobs", DashboardSession::new(session).ensure_csrf_token());
    render(&JobsPage {
        layout,
        user,
        rows,
        statuses: RunStatus::ALL,
        selected: status.map(RunStatus::as_str).unwrap_or_default().to_owned(),
        matching,
        page,
        pages: ((matching.count + PAGE_SIZE - 1) / PAGE_SIZE).max(1),
        requested_page,
    })
}

/// An attempt as the run's page shows it.
pub struct AttemptRow {
    pub machine_id: i64,
    pub machine: String,
    pub started: Moment,
    pub ended: Option<Moment>,
    pub outcome: String,
}

#[derive(Template)]
#[template(path = "run_detail.html")]
struct RunPage {
    layout: Layout,
    user: CurrentUser,
    run: Run,
    row: JobRow,
    parameters: String,
    result: Option<String>,
    requires: Vec<String>,
    created: Moment,
    started: Option<Moment>,
    finished: Option<Moment>,
    attempts: Vec<AttemptRow>,
    retried_from: Option<String>,
    retries: Vec<String>,
    can_operate: bool,
}

fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| json.to_owned())
}

/// `GET /api-management/jobs/{run_id}`: everything about one run, and every hand-out of it.
pub async fn detail(
    Viewer(user): Viewer,
    session: actix_session::Session,
    pool: web::Data<Pool>,
    run_id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let organization_id = user.organization.id;
    let now = chrono::Utc::now().naive_utc();
    let (run, row, attempts, retried_from, retries) = pool
        .run(move |conn| {
            let run = runs::find(conn, organization_id, &run_id)?.ok_or(WebError::NotFound)?;
            let summary = runs::summaries(conn, &[run.id])?
                .pop()
                .ok_or(WebError::NotFound)?;
            let row = JobRow::load(conn, vec![summary], now)?
                .pop()
                .ok_or(WebError::NotFound)?;
            let attempts = runs::attempts::of_run(conn, run.id)?;
            let retried_from = match run.retried_from_run_id {
                Some(id) => runs::public_id_of(conn, id)?,
                None => None,
            };
            let retries = runs::retries_of(conn, run.id)?;
            Ok::<_, WebError>((run, row, attempts, retried_from, retries))
        })
        .await?;
    let attempts = attempts
        .into_iter()
        .map(|a| AttemptRow {
            machine_id: a.machine_id,
            machine: machine_label(&MachineName {
                name: a.machine_name,
                removed: a.machine_removed,
            }),
            started: Moment::new(a.started_at, now),
            ended: a.ended_at.map(|t| Moment::new(t, now)),
            outcome: a
                .outcome
                .map_or_else(|| "Running".to_owned(), |o| o.label().to_owned()),
        })
        .collect();
    let can_operate = user.can_operate();
    render(&RunPage {
        layout: {
            let session = DashboardSession::new(session);
            Layout::new(
                format!("{} · Run", run.endpoint),
                session.ensure_csrf_token(),
            )
            .with_flash(&session)
        },
        parameters: pretty(&run.parameters),
        result: run.result.as_deref().map(pretty),
        requires: run.requires_list(),
        created: Moment::new(run.created_at, now),
        started: run.started_at.map(|t| Moment::new(t, now)),
        finished: run.finished_at.map(|t| Moment::new(t, now)),
        user,
        run,
        row,
        attempts,
        retried_from,
        retries,
        can_operate,
    })
}

/// After a change to a run from its page: back to a run's page, which announces what was done.
fn to_run_page(
    req: &HttpRequest,
    session: actix_session::Session,
    public_id: &str,
    said: &str,
) -> HttpResponse {
    crate::web::redirect_with_flash(
        req,
        session,
        &format!("/api-management/jobs/{public_id}"),
        said,
    )
}

fn run_error(error: RunError) -> WebError {
    match error {
        RunError::NotFound => WebError::NotFound,
        RunError::AlreadyFinished | RunError::NotRetryable => {
            WebError::BadRequest(error.to_string())
        }
        RunError::Query(e) => e.into(),
    }
}

/// `POST /api-management/jobs/{run_id}/cancel`: cancels a queued or running run (its machine is told).
pub async fn cancel(
    req: HttpRequest,
    session: actix_session::Session,
    Member(user): Member,
    pool: web::Data<Pool>,
    dispatcher: web::Data<Dispatcher>,
    run_id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let (organization_id, actor) = (user.organization.id, actor(&req, &user));
    let run = dispatcher
        .run(&pool, move |conn, changes| {
            let run = runs::cancel_by(conn, organization_id, &run_id, &actor).map_err(run_error)?;
            changes.finished(organization_id, run.status);
            Ok::<_, WebError>(run)
        })
        .await?;
    tracing::info!(run = %run.public_id, "run cancelled from the dashboard");
    let said = format!("Cancelled run {} of {}.", run.public_id, run.endpoint);
    Ok(to_run_page(&req, session, &run.public_id, &said))
}

/// `POST /api-management/jobs/{run_id}/retry`: queues a failed or cancelled run again, as a new run.
pub async fn retry(
    req: HttpRequest,
    session: actix_session::Session,
    Member(user): Member,
    pool: web::Data<Pool>,
    dispatcher: web::Data<Dispatcher>,
    run_id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let (organization_id, actor) = (user.organization.id, actor(&req, &user));
    let new = dispatcher
        .run(&pool, move |conn, changes| {
            let new = runs::retry(conn, organization_id, &run_id, &actor).map_err(run_error)?;
            changes.queued_needing(organization_id, &new.requires);
            Ok::<_, WebError>(new)
        })
        .await?;
    tracing::info!(run = %new.public_id, "run retried from the dashboard");
    let said = format!(
        "Queued {} again as run {}: this is the new run.",
        new.endpoint, new.public_id
    );
    Ok(to_run_page(&req, session, &new.public_id, &said))
}
