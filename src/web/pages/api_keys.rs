//! The API Keys section: create (shown once), list, revoke in place, roll with a grace period, and
//! per-key analytics.

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::NaiveDateTime;
use serde::Deserialize;

use crate::api_keys::cache::VerifiedKeys;
use crate::api_keys::{self, GracePeriod, KeyError, KeyName, ListedKey, rate_limit, usage};
use crate::config::Settings;
use crate::db::{DbConnection, Pool};
use crate::secret::Secret;
use crate::web::access::{Admin, CurrentUser, Member, Viewer};
use crate::web::error::WebError;
use crate::web::middleware::session::DashboardSession;
use crate::web::view::charts::{BarChart, Point};
use crate::web::view::feedback::{Focus, announce};
use crate::web::view::layout::{Layout, NewSecret, render_with_status};
use crate::web::view::time::{Moment, duration_words};
use crate::web::{actor, page_instead_of_fragment};

/// A key row as the list shows it.
pub struct KeyRow {
    pub id: i64,
    pub name: String,
    pub hint: String,
    pub created: Moment,
    pub created_by: String,
    pub last_used: Option<Moment>,
    pub last_used_from: String,
    pub expires_in: Option<String>,
    pub expires: Option<Moment>,
    pub needs_rotation: bool,
    pub age_days: i64,
    /// Rolled: the hint of the key that replaces this one.
    pub replaced_by: Option<String>,
    /// The hint of the key this one replaced, while that one still works.
    pub replaces: Option<String>,
    replaced_by_id: Option<i64>,
    /// What revoking it would break, for its confirmation: who called with it in the last day.
    pub revoke_impact: String,
    last_used_at: Option<NaiveDateTime>,
    /// Whether the viewer may revoke or roll it: admins any, members their own.
    pub can_revoke: bool,
    /// "600 / min (default)", "1,000 / min", "Unlimited".
    pub rate_limit: String,
    /// The key's own limit as the settings form shows it (empty: the default).
    pub own_rate_limit: String,
}

impl KeyRow {
    /// How rows, buttons and confirmations name a key: by name and hint, since a roll leaves two
    /// keys of one name side by side.
    pub fn label(&self) -> String {
        format!("{} ({})", self.name, self.hint)
    }
}

impl KeyRow {
    fn new(listed: ListedKey, now: NaiveDateTime, user: &CurrentUser, default_limit: i64) -> Self {
        let key = listed.key;
        let limit = rate_limit::limit_of(key.rate_limit_per_minute, default_limit);
        let rate_limit = match (limit, key.rate_limit_per_minute) {
            (0, None) => "Unlimited (default)".to_owned(),
            (0, Some(_)) => "Unlimited".to_owned(),
            (n, None) => format!("{} / min (default)", thousands(n)),
            (n, Some(_)) => format!("{} / min", thousands(n)),
        };
        let last_used_from = [
            key.last_used_ip.as_deref(),
            key.last_used_user_agent.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" · ");
        Self {
            can_revoke: user.may_revoke(key.created_by_user_id),
            rate_limit,
            own_rate_limit: key
                .rate_limit_per_minute
                .map(|n| n.to_string())
                .unwrap_or_default(),
            id: key.id,
            needs_rotation: key.needs_rotation(now) && key.expires_at.is_none(),
            age_days: (now - key.created_at).num_days(),
            name: key.name,
            hint: key.hint,
            created: Moment::new(key.created_at, now),
            created_by: listed.created_by.unwrap_or_else(|| "a deleted user".into()),
            last_used: key.last_used_at.map(|t| Moment::new(t, now)),
            last_used_from,
            expires_in: key
                .expires_at
                .map(|t| duration_words((t - now).num_seconds())),
            expires: key.expires_at.map(|t| Moment::new(t, now)),
            replaced_by: None,
            replaces: None,
            replaced_by_id: key.replaced_by_key_id,
            revoke_impact: String::new(),
            last_used_at: key.last_used_at,
        }
    }
}

/// "1,204 calls in the last 24 hours from 2 clients (10.0.0.5 · python-requests/2.31; …) to
/// invoice-sync and crm-export will start failing.", or when it was last used, or that it never was.
fn revoke_impact(
    recent: Option<&usage::RecentUse>,
    last_used: Option<NaiveDateTime>,
    now: NaiveDateTime,
) -> String {
    let Some(recent) = recent.filter(|r| r.calls > 0) else {
        return match last_used {
            Some(at) => format!(
                "It was not used in the last 24 hours (last used {}).",
                crate::web::view::time::relative((at - now).num_seconds())
            ),
            None => "It has never been used.".into(),
        };
    };
    let calls = if recent.calls == 1 {
        "1 call".to_owned()
    } else {
        format!("{} calls", thousands(recent.calls))
    };
    let from = match recent.clients.len() {
        0 => String::new(),
        n => {
            let named: Vec<String> = recent
                .clients
                .iter()
                .take(3)
                .map(|(ip, agent)| {
                    [ip.as_str(), agent.as_str()]
                        .into_iter()
                        .filter(|part| !part.is_empty())
                        .collect::<Vec<_>>()
                        .join(" · ")
                })
                .collect();
            let more = if n > 3 {
                format!("; and {} more", n - 3)
            } else {
                String::new()
            };
            let clients = if n == 1 {
                "1 client".to_owned()
            } else {
                format!("{n} clients")
            };
            format!(" from {clients} ({}{more})", named.join("; "))
        }
    };
    let to = match recent.endpoints.len() {
        0 => String::new(),
        n => {
            let named = recent
                .endpoints
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            let more = if n > 3 {
                format!(" and {} more", n - 3)
            } else {
                String::new()
            };
            format!(" to {named}{more}")
        }
    };
    format!("{calls} in the last 24 hours{from}{to} will start failing.")
}

/// 1204 → "1,204".
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Marks each rolled key with its successor and each successor with the key it replaced, when both
/// are listed.
fn link_rolls(rows: &mut [KeyRow]) {
    let hints: std::collections::HashMap<i64, String> =
        rows.iter().map(|r| (r.id, r.hint.clone())).collect();
    let mut replaces = Vec::new();
    for row in rows.iter_mut() {
        if let Some(successor) = row.replaced_by_id
            && let Some(hint) = hints.get(&successor)
        {
            row.replaced_by = Some(hint.clone());
            replaces.push((successor, row.hint.clone()));
        }
    }
    for (successor, hint) in replaces {
        if let Some(row) = rows.iter_mut().find(|r| r.id == successor) {
            row.replaces = Some(hint);
        }
    }
}

pub struct ApiKeysSection {
    /// The organization's slug: every public API path starts `/api/{slug}/`.
    pub slug: String,
    pub rows: Vec<KeyRow>,
    /// Whether the viewer may create keys (admins and members).
    pub can_create: bool,
    pub new_secret: Option<NewSecret>,
    pub form_name: String,
    pub form_error: Option<String>,
    pub grace_periods: [GracePeriod; 4],
}

impl ApiKeysSection {
    pub fn load(
        conn: &mut DbConnection,
        user: &CurrentUser,
        default_limit: i64,
        now: NaiveDateTime,
    ) -> Result<Self, WebError> {
        let mut rows: Vec<KeyRow> = api_keys::list_live(conn, user.organization.id, now)?
            .into_iter()
            .map(|k| KeyRow::new(k, now, user, default_limit))
            .collect();
        link_rolls(&mut rows);
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let recent = usage::recent_use(conn, &ids, now)?;
        for row in &mut rows {
            row.revoke_impact = revoke_impact(recent.get(&row.id), row.last_used_at, now);
        }
        Ok(Self {
            slug: user.organization.slug.clone(),
            rows,
            can_create: user.can_operate(),
            new_secret: None,
            form_name: String::new(),
            form_error: None,
            grace_periods: GracePeriod::ALL,
        })
    }
}

#[derive(Template)]
#[template(path = "sections/api_keys.html")]
struct SectionFragment<'a> {
    api_keys: &'a ApiKeysSection,
}

/// Loads the section and applies `change` to it, off the async executor.
async fn section(
    pool: &Pool,
    settings: &Settings,
    user: &CurrentUser,
    change: impl FnOnce(&mut ApiKeysSection) + Send + 'static,
) -> Result<ApiKeysSection, WebError> {
    let user = user.clone();
    let default_limit = settings.rate_limit_per_minute;
    pool.run(move |conn| {
        let mut section =
            ApiKeysSection::load(conn, &user, default_limit, chrono::Utc::now().naive_utc())?;
        change(&mut section);
        Ok(section)
    })
    .await
}

fn fragment(status: StatusCode, section: &ApiKeysSection) -> Result<HttpResponse, WebError> {
    render_with_status(status, &SectionFragment { api_keys: section })
}

/// `GET /api-management/api-keys`: the section for htmx, the page otherwise.
pub async fn show(
    req: HttpRequest,
    Viewer(user): Viewer,
    settings: web::Data<Settings>,
    pool: web::Data<Pool>,
) -> Result<HttpResponse, WebError> {
    if let Some(page) = page_instead_of_fragment(&req, "api-keys") {
        return Ok(page);
    }
    fragment(
        StatusCode::OK,
        &section(&pool, &settings, &user, |_| {}).await?,
    )
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
}

pub async fn create(
    req: HttpRequest,
    Member(user): Member,
    settings: web::Data<Settings>,
    pool: web::Data<Pool>,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, WebError> {
    let name = match KeyName::parse(&form.name) {
        Ok(name) => name,
        Err(message) => {
            let typed = form.name.clone();
            let section = section(&pool, &settings, &user, move |s| {
                s.form_name = typed;
                s.form_error = Some(message);
            })
            .await?;
            return fragment(StatusCode::UNPROCESSABLE_ENTITY, &section);
        }
    };
    let (organization_id, actor) = (user.organization.id, actor(&req, &user));
    let (key, secret) = pool
        .run(move |conn| Ok::<_, WebError>(api_keys::create(conn, organization_id, &name, &actor)?))
        .await?;
    tracing::info!(key_id = key.id, hint = %key.hint, "API key created");
    let shown = shown_once(secret, format!("“{}” is ready.", key.name));
    let mut response = fragment(
        StatusCode::OK,
        &section(&pool, &settings, &user, move |s| s.new_secret = Some(shown)).await?,
    )?;
    announce(
        &mut response,
        &format!(
            "Created key {} ({}). Copy it now: it is shown once.",
            key.name, key.hint
        ),
        Focus::On(format!("#{NEW_SECRET_ID}")),
    );
    Ok(response)
}

/// The element the new key is shown in, where focus goes once it is made.
const NEW_SECRET_ID: &str = "new-api-key";

fn shown_once(secret: Secret, note: String) -> NewSecret {
    NewSecret {
        element_id: NEW_SECRET_ID,
        label: "key",
        secret: secret.expose().to_owned(),
        note,
        command: None,
    }
}

/// Revokes a key and removes its row; when it was the last one, the whole section (its empty state).
pub async fn revoke(
    req: HttpRequest,
    Member(user): Member,
    settings: web::Data<Settings>,
    pool: web::Data<Pool>,
    keys: web::Data<VerifiedKeys>,
    key_id: web::Path<i64>,
) -> Result<HttpResponse, WebError> {
    let (organization_id, actor, key_id) = (
        user.organization.id,
        actor(&req, &user),
        key_id.into_inner(),
    );
    let key = pool
        .run(move |conn| {
            let key = api_keys::revoke(conn, organization_id, key_id, &actor).map_err(key_error)?;
            keys.forget(key.id);
            Ok::<_, WebError>(key)
        })
        .await?;
    tracing::info!(key_id = key.id, hint = %key.hint, "API key revoked");
    let said = format!(
        "Revoked key {} ({}). Calls with it now get 401 revoked_api_key.",
        key.name, key.hint
    );
    let section = section(&pool, &settings, &user, |_| {}).await?;
    if section.rows.is_empty() {
        let mut response = fragment(StatusCode::OK, &section)?;
        announce(&mut response, &said, Focus::On("#api-keys-heading".into()));
        let headers = response.headers_mut();
        headers.insert(
            HeaderName::from_static("hx-retarget"),
            HeaderValue::from_static("#api-keys"),
        );
        headers.insert(
            HeaderName::from_static("hx-reswap"),
            HeaderValue::from_static("outerHTML"),
        );
        return Ok(response);
    }
    let mut response = HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .finish();
    announce(&mut response, &said, Focus::NextRow);
    Ok(response)
}

#[derive(Deserialize)]
pub struct RollForm {
    #[serde(default)]
    grace: String,
}

pub async fn roll(
    req: HttpRequest,
    Member(user): Member,
    settings: web::Data<Settings>,
    pool: web::Data<Pool>,
    keys: web::Data<VerifiedKeys>,
    key_id: web::Path<i64>,
    form: web::Form<RollForm>,
) -> Result<HttpResponse, WebError> {
    let grace = GracePeriod::parse(&form.grace).map_err(WebError::BadRequest)?;
    let (organization_id, actor, key_id) = (
        user.organization.id,
        actor(&req, &user),
        key_id.into_inner(),
    );
    let (key, secret) = pool
        .run(move |conn| {
            let rolled =
                api_keys::roll(conn, organization_id, key_id, grace, &actor).map_err(key_error)?;
            keys.forget(key_id);
            Ok::<_, WebError>(rolled)
        })
        .await?;
    tracing::info!(key_id = key.id, hint = %key.hint, replaces = key_id, "API key rolled");
    let note = match grace {
        GracePeriod::Now => format!("“{}” was rolled; the old key stopped working.", key.name),
        other => format!(
            "“{}” was rolled; the old key keeps working for {}.",
            key.name,
            other.label()
        ),
    };
    let said = format!("{note} The new key is {}: copy it now.", key.hint);
    let shown = shown_once(secret, note);
    let mut response = fragment(
        StatusCode::OK,
        &section(&pool, &settings, &user, move |s| s.new_secret = Some(shown)).await?,
    )?;
    announce(&mut response, &said, Focus::On(format!("#{NEW_SECRET_ID}")));
    Ok(response)
}

fn key_error(error: KeyError) -> WebError {
    match error {
        KeyError::NotFound => WebError::NotFound,
        KeyError::AlreadyRolled => WebError::BadRequest(error.to_string()),
        KeyError::NotYours => WebError::NotYours(error.to_string()),
        KeyError::Query(e) => e.into(),
    }
}

fn usage_chart(
    label: &str,
    buckets: &[usage::Bucket],
    name_format: &str,
    label_every: usize,
) -> BarChart {
    let points: Vec<Point> = buckets
        .iter()
        .map(|b| Point {
            name: b.start.format(name_format).to_string(),
            primary: b.success,
            secondary: b.rejected,
        })
        .collect();
    BarChart::new(label, "Successful", Some("Rejected"), &points, label_every)
}

#[derive(Template)]
#[template(path = "api_key_analytics.html")]
struct AnalyticsPage {
    layout: Layout,
    user: CurrentUser,
    key: KeyRow,
    revoked: Option<Moment>,
    hourly: BarChart,
    daily: BarChart,
    /// Calls refused for the rate limit in the last 24 hours.
    limited_today: i64,
    default_limit: i64,
    form_error: Option<String>,
    form_value: String,
}

/// `GET /api-management/api-keys/{id}/analytics`: requests per hour (24 h) and per day (7 days), and
/// the key's rate limit.
pub async fn analytics(
    Viewer(user): Viewer,
    session: actix_session::Session,
    settings: web::Data<Settings>,
    pool: web::Data<Pool>,
    key_id: web::Path<i64>,
) -> Result<HttpResponse, WebError> {
    analytics_page(user, session, &settings, &pool, key_id.into_inner(), None).await
}

/// The analytics page, with the rate-limit form's error and what was typed when `refused`.
async fn analytics_page(
    user: CurrentUser,
    session: actix_session::Session,
    settings: &Settings,
    pool: &Pool,
    key_id: i64,
    refused: Option<(String, String)>,
) -> Result<HttpResponse, WebError> {
    let organization_id = user.organization.id;
    let now = chrono::Utc::now().naive_utc();
    let (key, hourly, daily) = pool
        .run(move |conn| {
            let key = api_keys::find(conn, organization_id, key_id)?.ok_or(WebError::NotFound)?;
            let hourly = usage::hourly(conn, key.id, now)?;
            let daily = usage::daily(conn, key.id, now)?;
            Ok::<_, WebError>((key, hourly, daily))
        })
        .await?;
    let revoked = key.revoked_at.map(|t| Moment::new(t, now));
    let default_limit = settings.rate_limit_per_minute;
    let key = KeyRow::new(
        ListedKey {
            key,
            created_by: None,
        },
        now,
        &user,
        default_limit,
    );
    let status = if refused.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let (form_error, form_value) = match refused {
        Some((message, typed)) => (Some(message), typed),
        None => (None, key.own_rate_limit.clone()),
    };
    let session = DashboardSession::new(session);
    let page = AnalyticsPage {
        layout: Layout::new(
            format!("{} · Analytics", key.name),
            session.ensure_csrf_token(),
        )
        .with_flash(&session),
        user,
        key,
        revoked,
        limited_today: hourly.iter().map(|b| b.limited).sum(),
        hourly: usage_chart(
            "Requests per hour, last 24 hours (UTC)",
            &hourly,
            "%H:00",
            3,
        ),
        daily: usage_chart("Requests per day, last 7 days (UTC)", &daily, "%a %d", 1),
        default_limit,
        form_error,
        form_value,
    };
    render_with_status(status, &page)
}

#[derive(Deserialize)]
pub struct RateLimitForm {
    #[serde(default)]
    rate_limit: String,
}

/// `POST /api-management/api-keys/{id}/rate-limit`: sets the key's own limit (admins).
#[allow(clippy::too_many_arguments)]
pub async fn set_rate_limit(
    req: HttpRequest,
    Admin(user): Admin,
    session: actix_session::Session,
    settings: web::Data<Settings>,
    pool: web::Data<Pool>,
    keys: web::Data<VerifiedKeys>,
    key_id: web::Path<i64>,
    form: web::Form<RateLimitForm>,
) -> Result<HttpResponse, WebError> {
    let key_id = key_id.into_inner();
    let limit = match api_keys::parse_rate_limit(&form.rate_limit) {
        Ok(limit) => limit,
        Err(message) => {
            let typed: String = form
                .rate_limit
                .chars()
                .filter(|c| !c.is_control())
                .collect();
            return analytics_page(
                user,
                session,
                &settings,
                &pool,
                key_id,
                Some((message, typed)),
            )
            .await;
        }
    };
    let (organization_id, actor) = (user.organization.id, actor(&req, &user));
    let key = pool
        .run(move |conn| {
            let key = api_keys::set_rate_limit(conn, organization_id, key_id, limit, &actor)
                .map_err(key_error)?;
            keys.forget(key.id);
            Ok::<_, WebError>(key)
        })
        .await?;
    let said = match limit {
        None => format!(
            "{} ({}) now has the default rate limit.",
            key.name, key.hint
        ),
        Some(0) => format!("{} ({}) is now unlimited.", key.name, key.hint),
        Some(n) => format!(
            "{} ({}) may now make {} requests a minute.",
            key.name,
            key.hint,
            thousands(n)
        ),
    };
    tracing::info!(key_id = key.id, limit = ?limit, "API key rate limit set");
    Ok(crate::web::redirect_with_flash(
        &req,
        session,
        &format!("/api-management/api-keys/{key_id}/analytics"),
        &said,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_what_a_revocation_breaks() {
        let now = chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        let recent = usage::RecentUse {
            calls: 1204,
            clients: vec![
                ("10.0.0.5".into(), "python-requests/2.31".into()),
                ("10.0.0.7".into(), String::new()),
            ],
            endpoints: vec!["invoice-sync".into(), "GET /api/me".into()],
        };
        assert_eq!(
            revoke_impact(Some(&recent), Some(now), now),
            "1,204 calls in the last 24 hours from 2 clients (10.0.0.5 · python-requests/2.31; \
             10.0.0.7) to invoice-sync, GET /api/me will start failing."
        );
        assert_eq!(
            revoke_impact(None, Some(now - chrono::Duration::days(41)), now),
            "It was not used in the last 24 hours (last used 41 days ago)."
        );
        assert_eq!(revoke_impact(None, None, now), "It has never been used.");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }
}
