//! One machine's page, in tabs the server renders (`?tab=overview|capabilities|jobs|settings`), so
//! each is a link that works without script: Overview, Capabilities, Job History (paged) and Settings
//! (rename, priority, pause or resume, remove; admins only, others read the values). The page
//! refreshes its live part by itself; the Settings forms stay outside it, so a refresh never touches
//! what an admin is typing.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::config::Settings;
use crate::db::Pool;
use crate::enrollment;
use crate::machines::settings::{self, NewName, Priority};
use crate::machines::{self, Machine};
use crate::queue;
use crate::runs::{self, RunSummary};
use crate::status::MachineStatus;
use crate::web::access::{Admin, CurrentUser, Viewer};
use crate::web::actor;
use crate::web::error::WebError;
use crate::web::middleware::session::DashboardSession;
use crate::web::pages::jobs::JobRow;
use crate::web::pages::machines::{MachineRow, REFRESH_SECONDS};
use crate::web::view::layout::{Layout, render, render_with_status};
use crate::web::view::time::{Moment, duration_words};

/// Jobs per page of the Job History tab.
pub const HISTORY_PAGE_SIZE: i64 = 25;
/// Deep enough for any history the retention keeps; offsets stay small.
const MAX_HISTORY_PAGE: i64 = 4_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Capabilities,
    Jobs,
    Settings,
}

impl Tab {
    pub const ALL: [Tab; 4] = [Tab::Overview, Tab::Capabilities, Tab::Jobs, Tab::Settings];

    /// An unknown or missing tab is the Overview.
    fn parse(text: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|tab| tab.as_str() == text)
            .unwrap_or(Tab::Overview)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Tab::Overview => "overview",
            Tab::Capabilities => "capabilities",
            Tab::Jobs => "jobs",
            Tab::Settings => "settings",
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Capabilities => "Capabilities",
            Tab::Jobs => "Job History",
            Tab::Settings => "Settings",
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct DetailQuery {
    #[serde(default)]
    tab: String,
    #[serde(default)]
    page: Option<i64>,
}

/// What the Settings forms show: the values typed (after a refused change) and what was wrong.
#[derive(Clone, Debug, Default)]
pub struct SettingsForm {
    pub name: String,
    pub priority: String,
    pub name_error: Option<String>,
    pub priority_error: Option<String>,
}

#[derive(Template)]
#[template(path = "machine_detail.html")]
struct DetailPage {
    layout: Layout,
    user: CurrentUser,
    tab: Tab,
    tabs: [Tab; 4],
    machine: MachineRow,
    driver_version: String,
    /// How long the driver has been up ("3 hours"), while the machine is in contact.
    uptime: Option<String>,
    enrolled: Moment,
    token_hint: Option<String>,
    token_description: Option<String>,
    token_created_by: Option<String>,
    history: Vec<JobRow>,
    history_page: i64,
    history_previous: Option<i64>,
    history_next: Option<i64>,
    /// The query string of this view, for its own refresh.
    self_query: String,
    form: SettingsForm,
    can_manage: bool,
    /// When an admin removed it: the page stays, as its history's names do.
    removed: Option<Moment>,
    refresh_seconds: u32,
}

/// Everything the page shows, read in one go.
struct Loaded {
    machine: Machine,
    origin: Option<(enrollment::EnrollmentToken, Option<String>)>,
    history: Vec<RunSummary>,
    more_history: bool,
    current: Vec<RunSummary>,
    waiting: Vec<queue::Waiting>,
}

async fn load(
    pool: &Pool,
    organization_id: i64,
    machine_id: i64,
    tab: Tab,
    history_page: i64,
) -> Result<Loaded, WebError> {
    pool.run(move |conn| {
        let machine = machines::find_including_removed(conn, organization_id, machine_id)?
            .ok_or(WebError::NotFound)?;
        let origin = match machine.enrollment_token_id {
            Some(token_id) => enrollment::origin_of(conn, token_id)?,
            None => None,
        };
        let (mut history, mut more_history) = (Vec::new(), false);
        if tab == Tab::Jobs {
            history = runs::history_of_machine(
                conn,
                machine.id,
                (history_page - 1) * HISTORY_PAGE_SIZE,
                HISTORY_PAGE_SIZE + 1,
            )?;
            more_history = history.len() as i64 > HISTORY_PAGE_SIZE;
            history.truncate(HISTORY_PAGE_SIZE as usize);
        }
        let current = runs::summaries(
            conn,
            &machine.current_run_id.into_iter().collect::<Vec<_>>(),
        )?;
        let waiting = queue::waiting(conn, organization_id)?;
        Ok::<_, WebError>(Loaded {
            machine,
            origin,
            history,
            more_history,
            current,
            waiting,
        })
    })
    .await
}

fn page(
    loaded: Loaded,
    user: CurrentUser,
    layout: Layout,
    tab: Tab,
    history_page: i64,
    form: Option<SettingsForm>,
    offline_after: chrono::Duration,
) -> DetailPage {
    let now = chrono::Utc::now().naive_utc();
    let Loaded {
        machine,
        origin,
        history,
        more_history,
        current,
        waiting,
    } = loaded;
    let in_contact = machine.status(now, offline_after) != MachineStatus::Offline;
    let uptime = machine
        .driver_started_at
        .filter(|_| in_contact)
        .map(|started| duration_words((now - started).num_seconds().max(0)));
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
    let form = form.unwrap_or_else(|| SettingsForm {
        name: machine.name.clone(),
        priority: machine.priority.to_string(),
        ..SettingsForm::default()
    });
    let self_query = match tab {
        Tab::Jobs => format!("tab=jobs&page={history_page}"),
        tab => format!("tab={}", tab.as_str()),
    };
    DetailPage {
        layout,
        machine: MachineRow::new(machine, &jobs, &waiting, now, offline_after),
        user,
        tab,
        tabs: Tab::ALL,
        driver_version,
        uptime,
        enrolled,
        token_hint,
        token_description,
        token_created_by,
        history,
        history_page,
        history_previous: (history_page > 1).then(|| history_page - 1),
        history_next: more_history.then(|| history_page + 1),
        self_query,
        form,
        can_manage,
        removed,
        refresh_seconds: REFRESH_SECONDS,
    }
}

fn layout_for(session: actix_session::Session, name: &str) -> Layout {
    let session = DashboardSession::new(session);
    Layout::new(format!("{name} · Machine"), session.ensure_csrf_token()).with_flash(&session)
}

/// `GET /api-management/machines/{id}?tab=…`: everything about one machine, one tab at a time.
pub async fn show(
    Viewer(user): Viewer,
    session: actix_session::Session,
    pool: web::Data<Pool>,
    settings: web::Data<Settings>,
    machine_id: web::Path<i64>,
    query: web::Query<DetailQuery>,
) -> Result<HttpResponse, WebError> {
    let tab = Tab::parse(&query.tab);
    let history_page = query.page.unwrap_or(1).clamp(1, MAX_HISTORY_PAGE);
    let loaded = load(
        &pool,
        user.organization.id,
        machine_id.into_inner(),
        tab,
        history_page,
    )
    .await?;
    let layout = layout_for(session, &loaded.machine.name);
    render(&page(
        loaded,
        user,
        layout,
        tab,
        history_page,
        None,
        settings.offline_after(),
    ))
}

#[derive(Deserialize)]
pub struct RenameForm {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
pub struct PriorityForm {
    #[serde(default)]
    priority: String,
}

/// A change the Settings tab made: back to the tab, saying what was done.
fn changed(
    req: &HttpRequest,
    session: actix_session::Session,
    machine_id: i64,
    said: &str,
) -> HttpResponse {
    let settings = format!("/api-management/machines/{machine_id}?tab=settings");
    crate::web::redirect_with_flash(req, session, &settings, said)
}

/// A change the Settings tab refused: the tab again, with what was typed and why (422; htmx takes
/// the Settings section out of it).
async fn refused(
    pool: &Pool,
    user: CurrentUser,
    session: actix_session::Session,
    machine_id: i64,
    form: SettingsForm,
    offline_after: chrono::Duration,
) -> Result<HttpResponse, WebError> {
    let loaded = load(pool, user.organization.id, machine_id, Tab::Settings, 1).await?;
    if loaded.machine.removed_at.is_some() {
        return Err(WebError::NotFound);
    }
    let layout = layout_for(session, &loaded.machine.name);
    let form = SettingsForm {
        name: if form.name_error.is_some() {
            form.name
        } else {
            loaded.machine.name.clone()
        },
        priority: if form.priority_error.is_some() {
            form.priority
        } else {
            loaded.machine.priority.to_string()
        },
        ..form
    };
    render_with_status(
        StatusCode::UNPROCESSABLE_ENTITY,
        &page(
            loaded,
            user,
            layout,
            Tab::Settings,
            1,
            Some(form),
            offline_after,
        ),
    )
}

/// `POST /api-management/machines/{id}/rename` (admins): a new name, audited.
pub async fn rename(
    req: HttpRequest,
    session: actix_session::Session,
    Admin(user): Admin,
    pool: web::Data<Pool>,
    settings: web::Data<Settings>,
    machine_id: web::Path<i64>,
    form: web::Form<RenameForm>,
) -> Result<HttpResponse, WebError> {
    let machine_id = machine_id.into_inner();
    let name = match NewName::parse(&form.name) {
        Ok(name) => name,
        Err(error) => {
            let typed = SettingsForm {
                // Kept as typed, without what no page can hold.
                name: form.name.replace('\0', ""),
                name_error: Some(error),
                ..SettingsForm::default()
            };
            return refused(
                &pool,
                user,
                session,
                machine_id,
                typed,
                settings.offline_after(),
            )
            .await;
        }
    };
    let (organization_id, actor) = (user.organization.id, actor(&req, &user));
    let renamed = pool
        .run(move |conn| {
            settings::rename(conn, organization_id, machine_id, &name, &actor)?
                .ok_or(WebError::NotFound)
        })
        .await?;
    tracing::info!(machine_id, "machine renamed");
    Ok(changed(
        &req,
        session,
        machine_id,
        &format!("Renamed the machine to {}.", renamed.name),
    ))
}

/// `POST /api-management/machines/{id}/priority` (admins): a new dispatch priority, audited; the
/// next claim already uses it.
pub async fn set_priority(
    req: HttpRequest,
    session: actix_session::Session,
    Admin(user): Admin,
    pool: web::Data<Pool>,
    settings: web::Data<Settings>,
    machine_id: web::Path<i64>,
    form: web::Form<PriorityForm>,
) -> Result<HttpResponse, WebError> {
    let machine_id = machine_id.into_inner();
    let priority = match Priority::parse(&form.priority) {
        Ok(priority) => priority,
        Err(error) => {
            let typed = SettingsForm {
                priority: form.priority.replace('\0', "").chars().take(40).collect(),
                priority_error: Some(error),
                ..SettingsForm::default()
            };
            return refused(
                &pool,
                user,
                session,
                machine_id,
                typed,
                settings.offline_after(),
            )
            .await;
        }
    };
    let (organization_id, actor) = (user.organization.id, actor(&req, &user));
    let machine = pool
        .run(move |conn| {
            settings::set_priority(conn, organization_id, machine_id, priority, &actor)?
                .ok_or(WebError::NotFound)
        })
        .await?;
    tracing::info!(
        machine_id,
        priority = machine.priority,
        "machine priority set"
    );
    Ok(changed(
        &req,
        session,
        machine_id,
        &format!(
            "The priority of {} is now {}; it counts from the next job handed out.",
            machine.name, machine.priority
        ),
    ))
}
