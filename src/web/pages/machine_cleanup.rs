//! "Clean up offline machines" (admins): choose how many days offline, see exactly which machines
//! that would remove, then confirm. The confirmation carries the ids shown, and only those that are
//! still offline that long are removed ([`crate::machines::cleanup`]).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::db::Pool;
use crate::machines::cleanup::{self, MOST_AT_ONCE, OfflineDays};
use crate::runs::dispatch::Dispatcher;
use crate::web::access::{Admin, CurrentUser};
use crate::web::actor;
use crate::web::error::WebError;
use crate::web::middleware::session::DashboardSession;
use crate::web::view::layout::{Layout, render_with_status};
use crate::web::view::time::Moment;

pub const PATH: &str = "/api-management/machines/cleanup";

/// A machine the cleanup would remove, as the preview lists it.
pub struct Candidate {
    pub id: i64,
    pub name: String,
    /// `None`: it never made contact.
    pub last_seen: Option<Moment>,
}

#[derive(Template)]
#[template(path = "machine_cleanup.html")]
struct CleanupPage {
    layout: Layout,
    user: CurrentUser,
    /// The days as typed, and what is wrong with them.
    days: String,
    error: Option<String>,
    /// After a valid number of days: the machines that would go.
    preview: Option<Vec<Candidate>>,
    /// More than [`MOST_AT_ONCE`] match: only the longest offline are listed (and removed).
    more: bool,
    most_at_once: usize,
    /// The listed ids, for the confirmation.
    ids: String,
}

#[derive(Deserialize)]
pub struct CleanupQuery {
    days: Option<String>,
}

/// `GET /api-management/machines/cleanup[?days=N]`: the form, and with `days` the preview.
pub async fn show(
    Admin(user): Admin,
    session: actix_session::Session,
    pool: web::Data<Pool>,
    query: web::Query<CleanupQuery>,
) -> Result<HttpResponse, WebError> {
    let session = DashboardSession::new(session);
    let layout =
        Layout::new("Clean up offline machines", session.ensure_csrf_token()).with_flash(&session);
    let Some(typed) = query.into_inner().days else {
        return render_with_status(
            StatusCode::OK,
            &CleanupPage {
                layout,
                user,
                days: OfflineDays::DEFAULT.get().to_string(),
                error: None,
                preview: None,
                more: false,
                most_at_once: MOST_AT_ONCE,
                ids: String::new(),
            },
        );
    };
    let days = match OfflineDays::parse(&typed) {
        Ok(days) => days,
        Err(error) => {
            return render_with_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &CleanupPage {
                    layout,
                    user,
                    days: typed.replace('\0', "").chars().take(20).collect(),
                    error: Some(error),
                    preview: None,
                    more: false,
                    most_at_once: MOST_AT_ONCE,
                    ids: String::new(),
                },
            );
        }
    };
    let organization_id = user.organization.id;
    let preview = pool
        .run(move |conn| {
            let now = chrono::Utc::now().naive_utc();
            Ok::<_, WebError>((cleanup::preview(conn, organization_id, days, now)?, now))
        })
        .await;
    let (found, now) = preview?;
    let ids = found
        .machines
        .iter()
        .map(|m| m.id.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let candidates = found
        .machines
        .into_iter()
        .map(|m| Candidate {
            id: m.id,
            last_seen: m.last_seen_at.map(|t| Moment::new(t, now)),
            name: m.name,
        })
        .collect();
    render_with_status(
        StatusCode::OK,
        &CleanupPage {
            layout,
            user,
            days: days.get().to_string(),
            error: None,
            preview: Some(candidates),
            more: found.more,
            most_at_once: MOST_AT_ONCE,
            ids,
        },
    )
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    days: String,
    /// The ids the preview listed, comma-separated.
    #[serde(default)]
    ids: String,
}

/// `POST /api-management/machines/cleanup`: removes the machines the preview listed that are still
/// offline that long, audited once; back to the machines section, saying how many went.
pub async fn confirm(
    req: HttpRequest,
    session: actix_session::Session,
    Admin(user): Admin,
    pool: web::Data<Pool>,
    dispatcher: web::Data<Dispatcher>,
    form: web::Form<ConfirmForm>,
) -> Result<HttpResponse, WebError> {
    let days = OfflineDays::parse(&form.days).map_err(WebError::BadRequest)?;
    let listed = parse_ids(&form.ids)?;
    let (organization_id, actor) = (user.organization.id, actor(&req, &user));
    let asked = listed.len();
    let removed = dispatcher
        .run(&pool, move |conn, changes| {
            Ok::<_, WebError>(cleanup::remove_listed(
                conn,
                organization_id,
                days,
                &listed,
                &actor,
                changes,
            )?)
        })
        .await?;
    tracing::info!(removed = removed.len(), "offline machines cleaned up");
    let mut said = match removed.len() {
        0 => "No machine was removed.".to_owned(),
        1 => "Removed 1 machine offline for more than".to_owned(),
        n => format!("Removed {n} machines offline for more than"),
    };
    if !removed.is_empty() {
        said.push_str(&format!(
            " {} days. Their credentials no longer work.",
            days.get()
        ));
    }
    if removed.len() < asked {
        let stayed = asked - removed.len();
        said.push_str(&format!(
            " {stayed} of the {asked} listed came back in contact or had been removed already, and stayed as they were."
        ));
    }
    Ok(crate::web::redirect_with_flash(
        &req,
        session,
        "/api-management#machines",
        &said,
    ))
}

/// The confirmation's ids: at most as many as a preview lists, each a number.
fn parse_ids(text: &str) -> Result<Vec<i64>, WebError> {
    let bad = || WebError::BadRequest("The list of machines to remove is not valid.".into());
    let ids = text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| part.parse::<i64>().map_err(|_| bad()))
        .collect::<Result<Vec<_>, _>>()?;
    if ids.len() > MOST_AT_ONCE {
        return Err(bad());
    }
    Ok(ids)
}
