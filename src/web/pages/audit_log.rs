//! The audit log page: the organization's events newest first, filtered by action and actor through
//! the query string (so a filtered view is a link to share), a page of events at a time, and the
//! same events downloaded as JSON lines.

use actix_web::http::header::{
    self, ContentDisposition, DispositionParam, DispositionType, HeaderValue,
};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::NaiveDateTime;
use serde::Deserialize;

use crate::audit::Action;
use crate::audit::history::{self, Filter, RecordedEvent};
use crate::db::Pool;
use crate::web::access::{CurrentUser, Viewer};
use crate::web::error::WebError;
use crate::web::is_htmx;
use crate::web::middleware::session::DashboardSession;
use crate::web::view::layout::{Layout, render};
use crate::web::view::time::Moment;

pub const PATH: &str = "/api-management/audit-log";
pub const DOWNLOAD_PATH: &str = "/api-management/audit-log.jsonl";

/// `?action=…&actor=…&before=…`, every part optional.
#[derive(Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    before: String,
}

impl AuditQuery {
    fn parse(&self) -> Result<(Filter, Option<i64>), WebError> {
        let refused = |e: history::FilterError| WebError::BadRequest(e.to_string());
        Ok((
            Filter::parse(&self.action, &self.actor).map_err(refused)?,
            history::parse_before(&self.before).map_err(refused)?,
        ))
    }
}

/// What an event was done to, as the log shows it: its kind, its id, and its page when it has one.
pub struct Target {
    pub kind: String,
    pub id: Option<String>,
    pub href: Option<String>,
}

impl Target {
    fn new(target_type: &str, target_id: Option<&str>) -> Option<Self> {
        let kind = match target_type {
            "" => return None,
            "api_key" => "API key",
            "enrollment_token" => "Enrollment token",
            "machine" => "Machine",
            "run" => "Run",
            "user" => "User",
            "invite" => "Invite",
            "organization" => "Organization",
            other => other,
        };
        let numeric = target_id.and_then(|id| id.parse::<i64>().ok());
        let href = match (target_type, numeric, target_id) {
            ("machine", Some(id), _) => Some(format!("/api-management/machines/{id}")),
            ("api_key", Some(id), _) => Some(format!("/api-management/api-keys/{id}/analytics")),
            ("run", _, Some(id)) if is_run_id(id) => Some(format!("/api-management/jobs/{id}")),
            _ => None,
        };
        Some(Self {
            kind: kind.to_owned(),
            id: target_id.map(str::to_owned),
            href,
        })
    }
}

/// A run's public id (`run_…`, base62): safe to put in a path as it is.
fn is_run_id(id: &str) -> bool {
    id.starts_with("run_") && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// One row of the log.
pub struct EventRow {
    pub id: i64,
    /// The stored action, for `data-action`.
    pub action: String,
    pub label: String,
    pub actor: String,
    pub target: Option<Target>,
    /// What the details name the target by ("vm-1", a key's name, a token's description or hint, a
    /// run's automation).
    pub target_name: Option<String>,
    pub ip: Option<String>,
    pub at: Moment,
}

impl EventRow {
    fn new(event: RecordedEvent, now: NaiveDateTime) -> Self {
        let details: serde_json::Value =
            serde_json::from_str(&event.details).unwrap_or(serde_json::Value::Null);
        let target_name = ["name", "description", "endpoint", "hint"]
            .iter()
            .find_map(|field| details.get(field)?.as_str().filter(|text| !text.is_empty()))
            .map(str::to_owned);
        Self {
            id: event.id,
            label: Action::parse(&event.action)
                .map_or_else(|| event.action.clone(), |a| a.label().to_owned()),
            target: Target::new(&event.target_type, event.target_id.as_deref()),
            target_name,
            ip: event.source_ip,
            at: Moment::new(event.created_at, now),
            actor: event.actor,
            action: event.action,
        }
    }
}

/// The list the page shows and htmx swaps when the filter changes
/// (`templates/fragments/audit_events.html`).
pub struct EventList {
    pub rows: Vec<EventRow>,
    pub filtered: bool,
    pub before: Option<i64>,
    pub older_href: Option<String>,
    pub newest_href: String,
    pub download_href: String,
}

fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

impl EventList {
    fn new(page: history::Page, filter: &Filter, before: Option<i64>, now: NaiveDateTime) -> Self {
        let query = filter.query();
        let older_href = page.older.map(|id| {
            let separator = if query.is_empty() { "" } else { "&" };
            format!("{PATH}?{query}{separator}before={id}")
        });
        Self {
            rows: page
                .events
                .into_iter()
                .map(|e| EventRow::new(e, now))
                .collect(),
            filtered: !filter.is_empty(),
            before,
            older_href,
            newest_href: with_query(PATH, &query),
            download_href: with_query(DOWNLOAD_PATH, &query),
        }
    }
}

#[derive(Template)]
#[template(path = "audit_log.html")]
struct AuditLogPage {
    layout: Layout,
    user: CurrentUser,
    actions: &'static [Action],
    selected_action: String,
    actor: String,
    actors: Vec<String>,
    list: EventList,
}

#[derive(Template)]
#[template(path = "fragments/audit_events.html")]
struct ListFragment<'a> {
    list: &'a EventList,
}

/// `GET /api-management/audit-log`: the page; just the list when htmx asks (a filter submitted).
pub async fn page(
    req: HttpRequest,
    Viewer(user): Viewer,
    session: actix_session::Session,
    pool: web::Data<Pool>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, WebError> {
    let (filter, before) = query.parse()?;
    // The list alone for a filter htmx submitted; the whole page when htmx restores a pushed URL it
    // no longer has in its history cache (Back after filtering), as for any navigation.
    let fragment = is_htmx(&req) && !req.headers().contains_key("HX-History-Restore-Request");
    let organization_id = user.organization.id;
    let now = chrono::Utc::now().naive_utc();
    let (page, actors) = {
        let filter = filter.clone();
        pool.run(move |conn| {
            let page = history::page(conn, organization_id, &filter, before)?;
            let actors = if fragment {
                Vec::new()
            } else {
                history::actors(conn, organization_id, history::ACTORS_LISTED)?
            };
            Ok::<_, WebError>((page, actors))
        })
        .await?
    };
    let list = EventList::new(page, &filter, before, now);
    if fragment {
        return render(&ListFragment { list: &list });
    }
    render(&AuditLogPage {
        layout: Layout::new(
            "Audit log",
            DashboardSession::new(session).ensure_csrf_token(),
        ),
        user,
        actions: &Action::ALL,
        selected_action: filter
            .action
            .map(Action::as_str)
            .unwrap_or_default()
            .to_owned(),
        actor: filter
            .actor
            .as_ref()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default(),
        actors,
        list,
    })
}

/// Events as JSON lines, one per line, and where the next batch starts (`None` after the last).
fn json_lines(events: &[RecordedEvent]) -> Result<(Bytes, Option<i64>), WebError> {
    let mut out = Vec::with_capacity(events.len() * 256);
    for event in events {
        serde_json::to_writer(&mut out, &event.export())
            .map_err(|e| WebError::Internal(anyhow::anyhow!("an event did not serialize: {e}")))?;
        out.push(b'\n');
    }
    let next = if (events.len() as i64) < history::BATCH_SIZE {
        None
    } else {
        events.last().map(|e| e.id)
    };
    Ok((Bytes::from(out), next))
}

/// `GET /api-management/audit-log.jsonl`: the filtered events, newest first, as JSON lines. Read
/// and sent a batch at a time (keyset, as the page), so a year of events never sits in memory.
pub async fn download(
    Viewer(user): Viewer,
    pool: web::Data<Pool>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, WebError> {
    let (filter, before) = query.parse()?;
    let organization_id = user.organization.id;
    let batch = {
        let (pool, filter) = (pool.clone(), filter.clone());
        move |before: Option<i64>| {
            let (pool, filter) = (pool.clone(), filter.clone());
            async move {
                let events = pool
                    .run(move |conn| {
                        history::events(conn, organization_id, &filter, before, history::BATCH_SIZE)
                            .map_err(WebError::from)
                    })
                    .await?;
                json_lines(&events)
            }
        }
    };
    // The first batch before the answer starts, so that a failing database is an error page and not a
    // download cut short.
    let (first, next) = batch(before).await?;
    let rest = futures_util::stream::try_unfold(next, move |next| {
        let batch = batch.clone();
        async move {
            match next {
                None => Ok(None),
                Some(before) => {
                    let (lines, next) = batch(Some(before)).await.inspect_err(|e| {
                        tracing::error!(error = ?e, "an audit log download stopped short");
                    })?;
                    Ok(Some((lines, next)))
                }
            }
        }
    });
    let body = futures_util::StreamExt::chain(
        futures_util::stream::once(std::future::ready(Ok::<_, WebError>(first))),
        rest,
    );
    let filename = format!(
        "granite-audit-log-{}-{}.jsonl",
        user.organization.slug,
        chrono::Utc::now().format("%Y%m%d-%H%M%S")
    );
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        ))
        .insert_header(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(filename)],
        })
        .streaming(body))
}
