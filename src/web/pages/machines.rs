//! The VM Machines section: live status of the fleet (refreshed by htmx every few seconds), counts per
//! status, filter and search, pages, removal in place; and each machine's detail page.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::db::{DbConnection, Pool};
use crate::enrollment;
use crate::machines::fleet::{Fleet, OrgFleet};
use crate::machines::{self, Machine, MachineFilter, StatusCounts};
use crate::runs::dispatch::Dispatcher;
use crate::runs::{self, RunSummary};
use crate::status::MachineStatus;
use crate::web::access::{Admin, CurrentUser, Viewer};
use crate::web::error::WebError;
use crate::web::middleware::session::DashboardSession;
use crate::web::pages::jobs::JobRow;
use crate::web::view::feedback::{Focus, announce};
use crate::web::view::layout::{Layout, render, render_with_status};
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
}

impl MachineRow {
    fn new(
        machine: Machine,
        jobs: &HashMap<i64, RunSummary>,
        now: NaiveDateTime,
        offline_after: chrono::Duration,
    ) -> Self {
        let status = machine.status(now, offline_after);
        let current_job = machine
            .current_run_id
            .filter(|_| status == MachineStatus::Busy)
            .and_then(|id| jobs.get(&id))
            .map(|run| format!("{} ({})", run.endpoint, run.public_id));
        Self {
            id: machine.id,
            status,
            paused: machine.paused_at.is_some(),
            driver_started: machine.driver_started_at.map(|t| Moment::new(t, now)),
            last_seen: machine.last_seen_at.map(|t| Moment::new(t, now)),
            current_job,
            name: machine.name,
            os_version: machine.os_version,
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
    #[serde(default)]
    pub page: Option<i64>,
}

impl ListQuery {
    fn filter(&self) -> MachineFilter {
        MachineFilter {
            status: MachineStatus::parse(&self.status),
            // No stored name holds a NUL character (`crate::text`), so none can match one.
            name_contains: self.q.chars().filter(|c| *c != '\0').take(100).collect(),
        }
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
        // The census has the counts per status; only a name search is counted here.
        let matching = if filter.name_contains.trim().is_empty() {
            filter
                .status
                .map_or(counts.total(), |status| counts.of(&status))
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
        let rows: Vec<MachineRow> = page_rows
            .into_iter()
            .map(|m| MachineRow::new(m, &jobs, now, offline_after))
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
            can_manage: user.can_manage(),
            refresh_seconds: REFRESH_SECONDS,
        })
    }
}

pub struct MachinesSection {
    pub list: MachineList,
    pub statuses: [MachineStatus; 3],
}

impl MachinesSection {
    pub fn load(
        conn: &mut DbConnection,
        user: &CurrentUser,
        now: NaiveDateTime,
        offline_after: chrono::Duration,
        fleet: &OrgFleet,
    ) -> Result<Self, WebError> {
        Ok(Self {
            list: MachineList::load(conn, user, &ListQuery::default(), now, offline_after, fleet)?,
            statuses: MachineStatus::ALL,
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
        DashboardSession::new(session).set_flash(&said);
        Ok(HttpResponse::Ok()
            .insert_header(("HX-Redirect", "/api-management#machines"))
            .finish())
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
    let (machine, jobs) = dispatcher
        .run(&pool, move |conn, changes| {
            let machine =
                machines::set_paused(conn, organization_id, machine_id, paused, &actor, changes)?
                    .ok_or(WebError::NotFound)?;
            let jobs = runs::summaries(
                conn,
                &machine.current_run_id.into_iter().collect::<Vec<_>>(),
            )?;
            Ok::<_, WebError>((machine, jobs))
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
    let detail = format!("/api-management/machines/{machine_id}");
    if !is_htmx(&req) {
        return Ok(crate::web::pages::login::see_other(&detail));
    }
    if then == "detail" {
        DashboardSession::new(session).set_flash(&said);
        return Ok(HttpResponse::Ok()
            .insert_header(("HX-Redirect", detail))
            .finish());
    }
    let jobs: HashMap<i64, RunSummary> = jobs.into_iter().map(|r| (r.id, r)).collect();
    let now = chrono::Utc::now().naive_utc();
    let row = MachineRow::new(machine, &jobs, now, offline_after);
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

#[derive(Template)]
#[template(path = "machine_detail.html")]
struct DetailPage {
    layout: Layout,
    user: CurrentUser,
    machine: MachineRow,
    capabilities: Vec<String>,
    driver_version: String,
    enrolled: Moment,
    token_hint: Option<String>,
    token_description: Option<String>,
    token_created_by: Option<String>,
    history: Vec<JobRow>,
    can_manage: bool,
    /// When an admin removed it: the page stays, as its history's names do.
    removed: Option<Moment>,
    refresh_seconds: u32,
}

/// `GET /api-management/machines/{id}`: everything about one machine, and the jobs it ran.
pub async fn detail(
    Viewer(user): Viewer,
    session: actix_session::Session,
    pool: web::Data<Pool>,
    settings: web::Data<Settings>,
    machine_id: web::Path<i64>,
) -> Result<HttpResponse, WebError> {
    let (organization_id, machine_id, offline_after) = (
        user.organization.id,
        machine_id.into_inner(),
        settings.offline_after(),
    );
    let now = chrono::Utc::now().naive_utc();
    let (machine, origin, history, current) = pool
        .run(move |conn| {
            let machine = machines::find_including_removed(conn, organization_id, machine_id)?
                .ok_or(WebError::NotFound)?;
            let origin = match machine.enrollment_token_id {
                Some(token_id) => enrollment::origin_of(conn, token_id)?,
                None => None,
            };
            let history = runs::history_of_machine(conn, machine.id, 50)?;
            let current = runs::summaries(
                conn,
                &machine.current_run_id.into_iter().collect::<Vec<_>>(),
            )?;
            Ok::<_, WebError>((machine, origin, history, current))
        })
        .await?;
    let capabilities = machine.capability_list();
    let (driver_version, enrolled) = (
        machine.driver_version.clone(),
        Moment::new(machine.enrolled_at, now),
    );
    let jobs: HashMap<i64, RunSummary> = current.into_iter().map(|r| (r.id, r)).collect();
    let (token_hint, token_description, token_created_by) = match origin {
        Some((token, created_by)) => (
            Some(token.hint),
            Some(token.description).filter(|d| !d.is_empty()),
            created_by,
        ),
        None => (None, None, None),
    };
    let names = HashMap::from([(
        machine.id,
        machines::MachineName {
            name: machine.name.clone(),
            removed: machine.removed_at.is_some(),
        },
    )]);
    let history = history
        .into_iter()
        .map(|run| JobRow::new(run, &names, now))
        .collect();
    let removed = machine.removed_at.map(|t| Moment::new(t, now));
    let can_manage = user.can_manage() && removed.is_none();
    let page = DetailPage {
        layout: {
            let session = DashboardSession::new(session);
            Layout::new(
                format!("{} · Machine", machine.name),
                session.ensure_csrf_token(),
            )
            .with_flash(&session)
        },
        machine: MachineRow::new(machine, &jobs, now, offline_after),
        user,
        capabilities,
        driver_version,
        enrolled,
        token_hint,
        token_description,
        token_created_by,
        history,
        can_manage,
        removed,
        refresh_seconds: REFRESH_SECONDS,
    };
    render(&page)
}
