//! The status strip under the page title: machines Online, Busy and Offline, jobs queued and the
//! average wait, each a link to its section, refreshed in place every few seconds. What the fleet
//! and the queue are doing, above the fold of a laptop screen.

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::NaiveDateTime;

use crate::db::{DbConnection, Pool};
use crate::machines::StatusCounts;
use crate::machines::fleet::{Fleet, OrgFleet};
use crate::queue::{self, QueueStatus};
use crate::status::MachineStatus;
use crate::web::access::Viewer;
use crate::web::error::WebError;
use crate::web::page_instead_of_fragment;
use crate::web::view::layout::render;

pub struct StatusStrip {
    pub statuses: [MachineStatus; 3],
    pub counts: StatusCounts,
    pub jobs_queued: i64,
    pub avg_wait: String,
    pub refresh_seconds: u32,
}

impl StatusStrip {
    /// From what the page has loaded already (the full page renders it with its sections).
    pub fn of(fleet: &OrgFleet, queue: &QueueStatus) -> Self {
        Self {
            statuses: MachineStatus::ALL,
            counts: fleet.counts,
            jobs_queued: queue.jobs_queued,
            avg_wait: queue::seconds_display(queue.avg_wait_seconds),
            refresh_seconds: crate::web::pages::machines::REFRESH_SECONDS,
        }
    }

    pub fn load(
        conn: &mut DbConnection,
        fleet: &Fleet,
        organization_id: i64,
        now: NaiveDateTime,
    ) -> Result<Self, WebError> {
        let machines = fleet.of(conn, organization_id, now)?;
        let queue = QueueStatus::load(conn, organization_id, now, &machines)?;
        Ok(Self::of(&machines, &queue))
    }
}

#[derive(Template)]
#[template(path = "fragments/status_strip.html")]
struct StripFragment<'a> {
    strip: &'a StatusStrip,
}

/// `GET /api-management/status-strip`: the strip alone, for its refresh.
pub async fn show(
    req: HttpRequest,
    Viewer(user): Viewer,
    pool: web::Data<Pool>,
    fleet: web::Data<Fleet>,
) -> Result<HttpResponse, WebError> {
    if let Some(page) = page_instead_of_fragment(&req, "main") {
        return Ok(page);
    }
    let organization_id = user.organization.id;
    let strip = pool
        .run(move |conn| {
            StatusStrip::load(
                conn,
                &fleet,
                organization_id,
                chrono::Utc::now().naive_utc(),
            )
        })
        .await?;
    render(&StripFragment { strip: &strip })
}
