//! The VM Machines section: live status of the fleet (refreshed by htmx every few seconds), counts per
//! status, filter by status or capability and search, each machine's queue depth, pages, pause and
//! removal in place. Each machine's own page is [`super::machine_detail`].

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::db::{DbConnection, Pool};
use crate::machines::fleet::{Fleet, OrgFleet};
use crate::machines::{self, Machine, MachineFilter, StatusCounts};
use crate::queue::{self, Waiting};
use crate::runs::dispatch::Dispatcher;
use crate::runs::{self, RunSummary};
use crate::status::MachineStatus;
use crate::web::access::{Admin, CurrentUser, Viewer};
use crate::web::error::WebError;
use crate::web::view::feedback::{Focus, announce};
use crate::web::view::layout::{render, render_with_status};
use crate::web::view::time::Moment;
use crate::web::{actor, is_htmx, page_instead_of_fragment};

pub const PAGE_SIZE: i64 = 50;
/// Beyond a million machines no page is asked for on purpose.
const MAX_PAGE: i64 = 1_000_000 / PAGE_SIZE;
/// How often an open page refreshes the list (the contract asks for at most 5 s).
pub const REFRESH_SECONDS: u32 = 4;

pub struct MachineRow {
    pub id: i64,
    pub name: String,
    pub status: MachineStatus,
    /// An admin paused (drained) it: shown as text beside the status.
    pub paused: bool,
    /// When its driver last started, for the uptime.
    pub driver_started: Option<Moment>,
    pub last_seen: Option<Moment>,
    pub current_job: Option<String>,
    pub os_version: String,
    pub ip_address: String,
    /// The driver named the port it listens on with its address.
    pub has_port: bool,
    pub capabilities: Vec<String>,
    /// Set by an admin; shown when not 0.
    pub priority: i32,
    /// Queued runs this machine could take.
    pub queue_depth: i64,
}

impl MachineRow {
    pub fn new(
        machine: Machine,
        jobs: &HashMap<i64, RunSummary>,
        waiting: &[Waiting],
        now: NaiveDateTime,
        offline_after: chrono::Duration,
    ) -> Self {
        let status = machine.status(now, offline_after);
        let current_job = machine
            .current_run_id
            .filter(|_| status == MachineStatus::Busy)
            .and_then(|id| jobs.get(&id))
            .map(|run| format!("{} ({})", run.endpoint, run.public_id));
        let capabilities = machine.capability_list();
        Self {
            queue_depth: queue::depth_for(waiting, &capabilities),
            capabilities,
            priority: machine.priority,
            id: machine.id,
            status,
            paused: machine.paused_at.is_some(),
            driver_started: machine.driver_started_at.map(|t| Moment::new(t, now)),
            last_seen: machine.last_seen_at.map(|t| Moment::new(t, now)),
            current_job,
            name: machine.name,
            os_version: machine.os_version,
            has_port: machine.ip_address.parse::<std::net::SocketAddr>().is_ok(),
            ip_address: machine.ip_address,
        }
    }
}

/// The filter, search and page of the list, as the query string carries them.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ListQuery {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub q: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub capability: String,
    #[serde(default)]
    pub page: Option<i64>,
}

impl ListQuery {
    fn filter(&self) -> MachineFilter {
        MachineFilter {
            status: MachineStatus::parse(&self.status),
            // No stored name holds a NUL character (`crate::text`), so none can match one.
            name_contains: self.q.chars().filter(|c| *c != '\0').take(100).collect(),
            capability: self.capability(),
        }
    }

    /// The capability asked for, as stored capabilities could hold it (no NUL, at most 50
    /// characters); empty for none.
    pub fn capability(&self) -> String {
        self.capability
            .trim()
            .chars()
            .filter(|c| *c != '\0')
            .take(50)
            .collect()
    }

    /// This view without its capability filter (and from its first page), as a query string.
    fn without_capability(&self) -> String {
        let kept: Vec<(&str, &str)> = [("status", self.status.as_str()), ("q", self.q.as_str())]
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .collect();
        serde_urlencoded::to_string(kept).unwrap_or_default()
    }

    /// The page asked for, within 1 and the last page any fleet could have (offsets stay small).
    fn page(&self) -> i64 {
        self.page.unwrap_or(1).clamp(1, MAX_PAGE)
    }

    /// The query string of this view at another page.
    fn at_page(&self, page: i64) -> String {
        let at = ListQuery {
            page: Some(page),
            ..self.clone()
        };
        serde_urlencoded::to_string(&at).unwrap_or_default()
    }
}

/// The part of the section that refreshes itself: counts, rows, pages.
pub struct MachineList {
    pub rows: Vec<MachineRow>,
    pub counts: StatusCounts,
    pub statuses: [MachineStatus; 3],
    pub matching: i64,
    pub page: i64,
    pub pages: i64,
    pub first_shown: i64,
    pub last_shown: i64,
    /// This view's own query string, for the next refresh.
    pub self_query: String,
    pub previous_query: Option<String>,
    pub next_query: Option<String>,
    pub filtered: bool,
    /// The capability the list is narrowed to (empty: none), and the query string without it.
    pub capability: String,
    pub clear_capability_query: String,
    pub can_manage: bool,
    pub refresh_seconds: u32,
}

impl MachineList {
    pub fn load(
        conn: &mut DbConnection,
        user: &CurrentUser,
        query: &ListQuery,
        now: NaiveDateTime,
        offline_after: chrono::Duration,
        fleet: &OrgFleet,
    ) -> Result<Self, WebError> {
        let organization_id = user.organization.id;
        let filter = query.filter();
        let counts = fleet.counts;
        // The census counts machines per status and capability list; only a search is counted here.
        let matching = if filter.counted_by_census() {
            fleet.matching(&filter)
        } else {
            machines::count_matching(conn, organization_id, &filter, now, offline_after)?
        };
        let mut page_rows = machines::list(
            conn,
            organization_id,
            &filter,
            now,
            offline_after,
            (query.page() - 1) * PAGE_SIZE,
            PAGE_SIZE,
        )?;
        let pages = ((matching + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
        let page = query.page().min(pages);
        if page != query.page() {
            // Past the end (machines went away): show the last page instead of an empty one.
            page_rows = machines::list(
                conn,
                organization_id,
                &filter,
                now,
                offline_after,
                (page - 1) * PAGE_SIZE,
                PAGE_SIZE,
            )?;
        }
        let running: Vec<i64> = page_rows.iter().filter_map(|m| m.current_run_id).collect();
        let jobs: HashMap<i64, RunSummary> = runs::summaries(conn, &running)?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let waiting = if page_rows.is_empty() {
            Vec::new()
        } else {
            queue::waiting(conn, organization_id)?
        };
        let rows: Vec<MachineRow> = page_rows
            .into_iter()
            .map(|m| MachineRow::new(m, &jobs, &waiting, now, offline_after))
            .collect();
        let first_shown = if rows.is_empty() {
            0
        } else {
            (page - 1) * PAGE_SIZE + 1
        };
        Ok(Self {
            last_shown: first_shown + rows.len() as i64 - 1,
            first_shown,
            rows,
            counts,
            statuses: MachineStatus::ALL,
            matching,
            page,
            pages,
            self_query: query.at_page(page),
            previous_query: (page > 1).then(|| query.at_page(page - 1)),
            next_query: (page < pages).then(|| query.at_page(page + 1)),
            filtered: filter != MachineFilter::default(),
            capability: filter.capability,
            clear_capability_query: query.without_capability(),
            can_manage: user.can_manage(),
            refresh_seconds: REFRESH_SECONDS,
        })
    }
}

pub struct MachinesSection {
    pub list: MachineList,
    pub statuses: [MachineStatus; 3],
    /// The filter the page was opened with (a link to `?capability=…`), shown in the form.
    pub query: ListQuery,
}

impl MachinesSection {
    pub fn load(
        conn: &mut DbConnection,
        user: &CurrentUser,
        query: ListQuery,
        now: NaiveDateTime,
        offline_after: chrono::Duration,
        fleet: &OrgFleet,
    ) -> Result<Self, WebError> {
        Ok(Self {
            list: MachineList::load(conn, user, &query, now, offline_after, fleet)?,
            statuses: MachineStatus::ALL,
            query: ListQuery {
                capability: query.capability(),
                ..query
            },
        })
    }
}

#[derive(Template)]
#[template(path = "fragments/machine_list.html")]
struct ListFragment<'a> {
    list: &'a MachineList,
}

/// `GET /api-management/machines/list`: the self-refreshing list for htmx; the page otherwise.
pub async fn list(
    req: HttpRequest,
    Viewer(user): Viewer,
    pool: web::Data<Pool>,
    settings: web::Data<Settings>,
    fleet: web::Data<Fleet>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, WebError> {
    if let Some(page) = page_instead_of_fragment(&req, "machines") {
        return Ok(page);
    }
    let (query, offline_after) = (query.into_inner(), settings.offline_after());
    let list = pool
        .run(move |conn| {
            let now = chrono::Utc::now().naive_utc();
            let machines = fleet.of(conn, user.organization.id, now)?;
            MachineList::load(conn, &user, &query, now, offline_after, &machines)
        })
        .await?;
    render_with_status(StatusCode::OK, &ListFragment { list: &list })
}

#[derive(Deserialize)]
pub struct AfterRemoval {
    /// `list`: send the browser back to the list (removing from the detail page).
    #[serde(default)]
    then: String,
}

/// Removes a machine: its row goes, its credential is refused, its running job is queued again.
pub async fn remove(
    req: HttpRequest,
    session: actix_session::Session,
    Admin(user): Admin,
    pool: web::Data<Pool>,
    machine_id: web::Path<i64>,
    after: web::Query<AfterRemoval>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, WebError> {
    let (organization_id, actor, machine_id) = (
        user.organization.id,
        actor(&req, &user),
        machine_id.into_inner(),
    );
    let removed = dispatcher
        .run(&pool, move |conn, changes| {
            Ok::<_, WebError>(machines::remove(
                conn,
                organization_id,
                machine_id,
                &actor,
                changes,
            )?)
        })
        .await?
        .ok_or(WebError::NotFound)?;
    tracing::info!(machine_id = removed.id, "machine removed");
    let said = format!(
        "Removed machine {}. Its credential no longer works; its running job, if any, went back to the queue.",
        removed.name
    );
    if is_htmx(&req) && after.then == "list" {
        Ok(crate::web::redirect_with_flash(
            &req,
            session,
            "/api-management#machines",
            &said,
        ))
    } else if is_htmx(&req) {
        let mut response = HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .finish();
        announce(&mut response, &said, Focus::NextRow);
        Ok(response)
    } else {
        Ok(crate::web::pages::login::see_other(
            "/api-management#machines",
        ))
    }
}

/// What a row needs of its list when it is rendered alone.
pub struct RowContext {
    pub can_manage: bool,
}

#[derive(Template)]
#[template(path = "fragments/machine_row.html")]
struct RowFragment<'a> {
    machine: &'a MachineRow,
    list: RowContext,
}

#[derive(Deserialize)]
pub struct AfterPause {
    /// `detail`: reload the detail page it was pressed on; otherwise the row is swapped in place.
    #[serde(default)]
    then: String,
}

/// `POST /api-management/machines/{id}/pause` (`PAUSED = true`) and `…/resume` (`false`): drain a machine (it finishes its run
/// and takes no new one) or put it back to work. Answers with the machine's row.
// Each argument is an extractor actix fills; grouping them would only hide what the handler uses.
#[allow(clippy::too_many_arguments)]
pub async fn set_paused<const PAUSED: bool>(
    req: HttpRequest,
    session: actix_session::Session,
    Admin(user): Admin,
    pool: web::Data<Pool>,
    settings: web::Data<Settings>,
    dispatcher: web::Data<Dispatcher>,
    machine_id: web::Path<i64>,
    after: web::Query<AfterPause>,
) -> Result<HttpResponse, WebError> {
    let (machine_id, paused, then) = (machine_id.into_inner(), PAUSED, after.then.as_str());
    let (organization_id, actor, offline_after) = (
        user.organization.id,
        actor(&req, &user),
        settings.offline_after(),
    );
    let (machine, jobs, waiting) = dispatcher
        .run(&pool, move |conn, changes| {
            let machine =
                machines::set_paused(conn, organization_id, machine_id, paused, &actor, changes)?
                    .ok_or(WebError::NotFound)?;
            let jobs = runs::summaries(
                conn,
                &machine.current_run_id.into_iter().collect::<Vec<_>>(),
            )?;
            let waiting = queue::waiting(conn, organization_id)?;
            Ok::<_, WebError>((machine, jobs, waiting))
        })
        .await?;
    tracing::info!(machine_id, paused, "machine paused or resumed");
    let said = if paused {
        format!(
            "Paused machine {}. It finishes its current job, then takes no new ones until resumed.",
            machine.name
        )
    } else {
        format!("Resumed machine {}. It takes jobs again.", machine.name)
    };
    let detail = format!("/api-management/machines/{machine_id}?tab=settings");
    if !is_htmx(&req) {
        return Ok(crate::web::pages::login::see_other(&detail));
    }
    if then == "detail" {
        return Ok(crate::web::redirect_with_flash(
            &req, session, &detail, &said,
        ));
    }
    let jobs: HashMap<i64, RunSummary> = jobs.into_iter().map(|r| (r.id, r)).collect();
    let now = chrono::Utc::now().naive_utc();
    let row = MachineRow::new(machine, &jobs, &waiting, now, offline_after);
    let mut response = render(&RowFragment {
        machine: &row,
        list: RowContext {
            can_manage: user.can_manage(),
        },
    })?;
    // The row is morphed in place: the button pressed becomes its opposite and keeps focus.
    announce(
        &mut response,
        &said,
        Focus::On(format!("#machine-{machine_id} td.actions button")),
    );
    Ok(response)
}
