//! The Queue Status section: the contract's three numbers, refreshed by htmx every few seconds.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;

use super::auth::CurrentUser;
use super::error::WebError;
use super::is_htmx;
use super::layout::render_with_status;
use crate::config::Settings;
use crate::db::Pool;
use crate::queue::QueueStatus;

#[derive(Template)]
#[template(path = "sections/queue_status.html")]
struct SectionFragment<'a> {
    queue: &'a QueueStatus,
}

pub async fn show(
    req: HttpRequest,
    user: CurrentUser,
    pool: web::Data<Pool>,
    settings: web::Data<Settings>,
) -> Result<HttpResponse, WebError> {
    if !is_htmx(&req) {
        return Ok(super::login::see_other("/api-management#queue-status"));
    }
    let (organization_id, offline_after) = (user.organization.id, settings.offline_after());
    let queue = pool
        .run(move |conn| Ok::<_, WebError>(QueueStatus::load(conn, organization_id, chrono::Utc::now().naive_utc(), offline_after)?))
        .await?;
    render_with_status(StatusCode::OK, &SectionFragment { queue: &queue })
}
