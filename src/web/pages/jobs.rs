//! The organization's jobs (runs), newest first, filtered by status, a page at a time.

use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::NaiveDateTime;
use serde::Deserialize;

use crate::db::Pool;
use crate::runs::{self, RunSummary};
use crate::status::RunStatus;
use crate::web::access::{CurrentUser, Viewer};
use crate::web::error::WebError;
use crate::web::middleware::session::DashboardSession;
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
    pub error: Option<String>,
}

impl JobRow {
    pub fn new(run: RunSummary, now: NaiveDateTime) -> Self {
        let seconds = |from: NaiveDateTime, to: Option<NaiveDateTime>| match to {
            Some(to) => format!("{:.1} s", (to - from).as_seconds_f64().max(0.0)),
            None => "—".to_owned(),
        };
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
            machine_id: run.machine_id,
            error: run.error_message,
        }
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
    matching: i64,
    page: i64,
    pages: i64,
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
    let page = query.page.unwrap_or(1).max(1);
    let organization_id = user.organization.id;
    let (summaries, matching) = pool
        .run(move |conn| {
            Ok::<_, WebError>(runs::list(
                conn,
                organization_id,
                status,
                (page - 1) * PAGE_SIZE,
                PAGE_SIZE,
            )?)
        })
        .await?;
    let now = chrono::Utc::now().naive_utc();
    let rows = summaries
        .into_iter()
        .map(|run| JobRow::new(run, now))
        .collect();
    let layout = Layout::new("Jobs", DashboardSession::new(session).ensure_csrf_token());
    render(&JobsPage {
        layout,
        user,
        rows,
        statuses: RunStatus::ALL,
        selected: status.map(RunStatus::as_str).unwrap_or_default().to_owned(),
        matching,
        page,
        pages: ((matching + PAGE_SIZE - 1) / PAGE_SIZE).max(1),
    })
}
