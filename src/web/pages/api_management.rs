//! The API Management page: API keys, enrollment tokens, VM machines and queue status on one page.

use actix_session::Session;
use actix_web::{HttpResponse, web};
use askama::Template;

use crate::config::Settings;
use crate::db::Pool;
use crate::machines::fleet::Fleet;
use crate::web::access::{CurrentUser, Viewer};
use crate::web::error::WebError;
use crate::web::middleware::session::DashboardSession;
use crate::web::pages::api_keys::ApiKeysSection;
use crate::web::pages::enrollment_tokens::EnrollmentTokensSection;
use crate::web::pages::login::see_other;
use crate::web::pages::machines::{ListQuery, MachinesSection};
use crate::web::pages::queue_status::QueueSection;
use crate::web::pages::status_strip::StatusStrip;
use crate::web::view::filters;
use crate::web::view::layout::{Layout, render};

#[derive(Template)]
#[template(path = "api_management.html")]
struct ApiManagementPage {
    layout: Layout,
    user: CurrentUser,
    api_keys: ApiKeysSection,
    enrollment_tokens: EnrollmentTokensSection,
    machines: MachinesSection,
    queue: QueueSection,
    strip: StatusStrip,
}

pub async fn home() -> HttpResponse {
    see_other("/api-management")
}

pub async fn page(
    Viewer(user): Viewer,
    session: Session,
    pool: web::Data<Pool>,
    settings: web::Data<Settings>,
    fleet: web::Data<Fleet>,
    machine_query: Option<web::Query<ListQuery>>,
) -> Result<HttpResponse, WebError> {
    // The machines section's filter, when a link carries one (`?capability=sap`); a query that is not
    // one still shows the page, unfiltered.
    let machine_query = machine_query
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let offline_after = settings.offline_after();
    let for_load = user.clone();
    let default_token_hours = settings.enrollment_ttl_hours as i64;
    let default_limit = settings.rate_limit_per_minute;
    let (api_keys, enrollment_tokens, machines, queue, strip) = pool
        .run(move |conn| {
            let now = chrono::Utc::now().naive_utc();
            let api_keys = ApiKeysSection::load(conn, &for_load, default_limit, now)?;
            let enrollment_tokens =
                EnrollmentTokensSection::load(conn, &for_load, default_token_hours, now)?;
            let fleet = fleet.of(conn, for_load.organization.id, now)?;
            let machines =
                MachinesSection::load(conn, &for_load, machine_query, now, offline_after, &fleet)?;
            let queue = QueueSection::load(conn, for_load.organization.id, now, &fleet)?;
            let strip = StatusStrip::of(&fleet, &queue.status);
            Ok::<_, WebError>((api_keys, enrollment_tokens, machines, queue, strip))
        })
        .await?;
    let session = DashboardSession::new(session);
    render(&ApiManagementPage {
        layout: Layout::new("API Management", session.ensure_csrf_token()).with_flash(&session),
        user,
        api_keys,
        enrollment_tokens,
        machines,
        queue,
        strip,
    })
}
