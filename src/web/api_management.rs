//! The API Management page: API keys, enrollment tokens, VM machines and queue status on one page.

use actix_session::Session;
use actix_web::{HttpResponse, web};
use askama::Template;

use super::auth::CurrentUser;
use super::error::WebError;
use super::layout::{Layout, render};
use super::login::see_other;
use super::session::DashboardSession;
use crate::config::Settings;
use crate::db::Pool;
use crate::queue::QueueStatus;

#[derive(Template)]
#[template(path = "api_management.html")]
struct ApiManagementPage {
    layout: Layout,
    user: CurrentUser,
    queue: QueueStatus,
}

pub async fn home() -> HttpResponse {
    see_other("/api-management")
}

pub async fn page(
    user: CurrentUser,
    session: Session,
    pool: web::Data<Pool>,
    settings: web::Data<Settings>,
) -> Result<HttpResponse, WebError> {
    let organization_id = user.organization.id;
    let offline_after = chrono::Duration::seconds(settings.offline_after_secs as i64);
    let queue = pool
        .run(move |conn| {
            QueueStatus::load(conn, organization_id, chrono::Utc::now().naive_utc(), offline_after)
                .map_err(WebError::from)
        })
        .await?;
    let csrf_token = DashboardSession::new(session).ensure_csrf_token();
    render(&ApiManagementPage { layout: Layout::new("API Management", csrf_token), user, queue })
}
