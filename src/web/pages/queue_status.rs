//! The Queue Status section: the contract's three numbers and what explains them (running jobs, the
//! oldest wait, p95 wait, busy and idle drivers, queue depth over the hour, jobs nobody can run),
//! refreshed by htmx every few seconds.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::NaiveDateTime;

use crate::db::{DbConnection, Pool};
use crate::machines::fleet::{Fleet, OrgFleet};
use crate::queue::{self, QueueStatus, Unrunnable};
use crate::web::access::Viewer;
use crate::web::error::WebError;
use crate::web::page_instead_of_fragment;
use crate::web::view::charts::{BarChart, Point};
use crate::web::view::filters;
use crate::web::view::layout::render_with_status;

pub struct QueueSection {
    pub status: QueueStatus,
    pub avg_wait: String,
    pub p95_wait: String,
    pub oldest_queued: String,
    pub idle_drivers: i64,
    pub depth: BarChart,
    pub unrunnable: Vec<Unrunnable>,
    pub unrunnable_total: i64,
    pub refresh_seconds: u32,
}

impl QueueSection {
    pub fn load(
        conn: &mut DbConnection,
        organization_id: i64,
        now: NaiveDateTime,
        fleet: &OrgFleet,
    ) -> Result<Self, WebError> {
        let status = QueueStatus::load(conn, organization_id, now, fleet)?;
        let p95_wait_seconds = queue::p95_wait_seconds(conn, organization_id, now)?;
        let depth: Vec<Point> = queue::depth_last_hour(conn, organization_id, now)?
            .into_iter()
            .map(|(at, depth)| Point {
                name: at.format("%H:%M").to_string(),
                primary: depth,
                secondary: 0,
            })
            .collect();
        let peak = depth.iter().map(|p| p.primary).max().unwrap_or(0);
        let unrunnable = queue::unrunnable(&status, fleet);
        Ok(Self {
            avg_wait: queue::seconds_display(status.avg_wait_seconds),
            p95_wait: queue::seconds_display(p95_wait_seconds),
            oldest_queued: queue::seconds_display(status.oldest_queued_seconds),
            idle_drivers: status.active_drivers - status.busy_drivers,
            depth: BarChart::new("Jobs queued, last hour (UTC)", "Queued", None, &depth, 10)
                .with_summary(format!("peak {peak} · now {}", status.jobs_queued)),
            unrunnable_total: unrunnable.iter().map(|u| u.count).sum(),
            unrunnable,
            status,
            refresh_seconds: crate::web::pages::machines::REFRESH_SECONDS,
        })
    }
}

#[derive(Template)]
#[template(path = "sections/queue_status.html")]
struct SectionFragment<'a> {
    queue: &'a QueueSection,
}

pub async fn show(
    req: HttpRequest,
    Viewer(user): Viewer,
    pool: web::Data<Pool>,
    fleet: web::Data<Fleet>,
) -> Result<HttpResponse, WebError> {
    if let Some(page) = page_instead_of_fragment(&req, "queue-status") {
        return Ok(page);
    }
    let organization_id = user.organization.id;
    let queue = pool
        .run(move |conn| {
            let now = chrono::Utc::now().naive_utc();
            let machines = fleet.of(conn, organization_id, now)?;
            QueueSection::load(conn, organization_id, now, &machines)
        })
        .await?;
    render_with_status(StatusCode::OK, &SectionFragment { queue: &queue })
}
