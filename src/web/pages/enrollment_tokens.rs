//! The Enrollment Tokens section: create a one-time token (shown once, with the command that uses it),
//! list active tokens and 7 days of history, revoke an active token in place.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::NaiveDateTime;
use serde::Deserialize;

use crate::config::Settings;
use crate::db::{DbConnection, Pool};
use crate::enrollment::{self, ListedToken, TokenError, TokenState};
use crate::web::access::{CurrentUser, Member, Viewer};
use crate::web::error::WebError;
use crate::web::view::feedback::{Focus, announce};
use crate::web::view::layout::{NewSecret, render_with_status};
use crate::web::view::time::Moment;
use crate::web::{actor, page_instead_of_fragment};

pub struct TokenRow {
    pub id: i64,
    pub description: String,
    pub hint: String,
    pub created: Moment,
    pub created_by: String,
    pub expires: Moment,
    pub state: TokenState,
    pub machine_id: Option<i64>,
    pub machine_name: Option<String>,
    /// Whether the viewer may revoke it: admins any, members their own.
    pub can_revoke: bool,
}

impl TokenRow {
    fn new(listed: ListedToken, now: NaiveDateTime, user: &CurrentUser) -> Self {
        let token = listed.token;
        Self {
            can_revoke: user.may_revoke(token.created_by_user_id),
            id: token.id,
            state: token.state(now),
            description: token.description,
            hint: token.hint,
            created: Moment::new(token.created_at, now),
            created_by: listed.created_by.unwrap_or_else(|| "a deleted user".into()),
            expires: Moment::new(token.expires_at, now),
            machine_id: token.machine_id,
            machine_name: listed.machine_name,
        }
    }

    pub fn is_active(&self) -> bool {
        self.state == TokenState::Active
    }

    pub fn state_class(&self) -> &'static str {
        match self.state {
            TokenState::Active => "ok",
            TokenState::Used => "info",
            TokenState::Expired | TokenState::Revoked => "neutral",
        }
    }
}

/// A lifetime the form offers.
pub struct LifetimeChoice {
    pub hours: i64,
    pub label: String,
    pub selected: bool,
}

/// The part of the section that refreshes itself, so a token flips to Used while the admin watches.
pub struct TokenList {
    pub rows: Vec<TokenRow>,
    pub refresh_seconds: u32,
}

impl TokenList {
    pub fn load(
        conn: &mut DbConnection,
        user: &CurrentUser,
        now: NaiveDateTime,
    ) -> Result<Self, WebError> {
        let rows = enrollment::list_recent(conn, user.organization.id, now)?
            .into_iter()
            .map(|t| TokenRow::new(t, now, user))
            .collect();
        Ok(Self {
            rows,
            refresh_seconds: crate::web::pages::machines::REFRESH_SECONDS,
        })
    }
}

pub struct EnrollmentTokensSection {
    pub list: TokenList,
    /// Whether the viewer may create tokens (admins and members).
    pub can_create: bool,
    pub new_secret: Option<NewSecret>,
    pub form_description: String,
    pub form_error: Option<String>,
    pub lifetimes: Vec<LifetimeChoice>,
}

impl EnrollmentTokensSection {
    pub fn load(
        conn: &mut DbConnection,
        user: &CurrentUser,
        default_lifetime_hours: i64,
        now: NaiveDateTime,
    ) -> Result<Self, WebError> {
        let can_create = user.can_operate();
        let list = TokenList::load(conn, user, now)?;
        let mut hours = vec![1, 6, 24, 72, 168];
        if !hours.contains(&default_lifetime_hours) {
            hours.push(default_lifetime_hours);
            hours.sort_unstable();
        }
        let lifetimes = hours
            .into_iter()
            .map(|h| LifetimeChoice {
                hours: h,
                label: match h {
                    1 => "1 hour".into(),
                    168 => "7 days".into(),
                    h if h % 24 == 0 && h > 24 => format!("{} days", h / 24),
                    h => format!("{h} hours"),
                },
                selected: h == default_lifetime_hours,
            })
            .collect();
        Ok(Self {
            list,
            can_create,
            new_secret: None,
            form_description: String::new(),
            form_error: None,
            lifetimes,
        })
    }
}

#[derive(Template)]
#[template(path = "sections/enrollment_tokens.html")]
struct SectionFragment<'a> {
    enrollment_tokens: &'a EnrollmentTokensSection,
}

#[derive(Template)]
#[template(path = "fragments/token_list.html")]
struct ListFragment<'a> {
    list: &'a TokenList,
}

/// `GET /api-management/enrollment-tokens/list`: the self-refreshing token list.
pub async fn list(
    req: HttpRequest,
    Viewer(user): Viewer,
    pool: web::Data<Pool>,
) -> Result<HttpResponse, WebError> {
    if let Some(page) = page_instead_of_fragment(&req, "enrollment-tokens") {
        return Ok(page);
    }
    let list = pool
        .run(move |conn| TokenList::load(conn, &user, chrono::Utc::now().naive_utc()))
        .await?;
    render_with_status(StatusCode::OK, &ListFragment { list: &list })
}

#[derive(Template)]
#[template(path = "fragments/enrollment_token_row.html")]
struct RowFragment<'a> {
    token: &'a TokenRow,
}

async fn section(
    pool: &Pool,
    settings: &Settings,
    user: &CurrentUser,
    change: impl FnOnce(&mut EnrollmentTokensSection) + Send + 'static,
) -> Result<EnrollmentTokensSection, WebError> {
    let (user, default_hours) = (user.clone(), settings.enrollment_ttl_hours as i64);
    pool.run(move |conn| {
        let mut section = EnrollmentTokensSection::load(
            conn,
            &user,
            default_hours,
            chrono::Utc::now().naive_utc(),
        )?;
        change(&mut section);
        Ok(section)
    })
    .await
}

pub async fn show(
    req: HttpRequest,
    Viewer(user): Viewer,
    pool: web::Data<Pool>,
    settings: web::Data<Settings>,
) -> Result<HttpResponse, WebError> {
    if let Some(page) = page_instead_of_fragment(&req, "enrollment-tokens") {
        return Ok(page);
    }
    let section = section(&pool, &settings, &user, |_| {}).await?;
    render_with_status(
        StatusCode::OK,
        &SectionFragment {
            enrollment_tokens: &section,
        },
    )
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    description: String,
    #[serde(default)]
    lifetime_hours: String,
}

pub async fn create(
    req: HttpRequest,
    Member(user): Member,
    pool: web::Data<Pool>,
    settings: web::Data<Settings>,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    let lifetime = if form.lifetime_hours.trim().is_empty() {
        Ok(settings.enrollment_ttl_hours as i64)
    } else {
        enrollment::parse_lifetime_hours(&form.lifetime_hours)
    };
    let parsed =
        enrollment::parse_description(&form.description).and_then(|d| lifetime.map(|l| (d, l)));
    let (description, lifetime_hours) = match parsed {
        Ok(valid) => valid,
        Err(message) => {
            let typed = form.description.clone();
            let section = section(&pool, &settings, &user, move |s| {
                s.form_description = typed;
                s.form_error = Some(message);
            })
            .await?;
            return render_with_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &SectionFragment {
                    enrollment_tokens: &section,
                },
            );
        }
    };
    let (organization_id, actor) = (user.organization.id, actor(&req, &user));
    let (token, secret) = pool
        .run(move |conn| {
            Ok::<_, WebError>(enrollment::create(
                conn,
                organization_id,
                &description,
                lifetime_hours,
                &actor,
            )?)
        })
        .await?;
    tracing::info!(token_id = token.id, hint = %token.hint, "enrollment token created");
    let server = crate::web::server_url(&req, &settings);
    let shown = NewSecret {
        element_id: NEW_SECRET_ID,
        label: "token",
        command: Some(enroll_command(&server)),
        secret: secret.expose().to_owned(),
        note: format!(
            "Token {} is ready and works once, until {}.",
            token.hint,
            token.expires_at.format("%Y-%m-%d %H:%M UTC")
        ),
    };
    let section = section(&pool, &settings, &user, move |s| s.new_secret = Some(shown)).await?;
    let mut response = render_with_status(
        StatusCode::OK,
        &SectionFragment {
            enrollment_tokens: &section,
        },
    )?;
    announce(
        &mut response,
        &format!(
            "Created token {}. Copy it now: it is shown once.",
            token.hint
        ),
        Focus::On(format!("#{NEW_SECRET_ID}")),
    );
    Ok(response)
}

/// The element the new token is shown in, where focus goes once it is made.
const NEW_SECRET_ID: &str = "new-enrollment-token";

/// The command that enrolls a machine using the reference driver. The token is not in it: the driver
/// asks for it (without echo), so it stays out of shell history and the process list.
fn enroll_command(server: &str) -> String {
    format!("granite driver enroll --server {server}")
}

/// Revokes an active token and answers with its row, now Revoked.
pub async fn revoke(
    req: HttpRequest,
    Member(user): Member,
    pool: web::Data<Pool>,
    token_id: web::Path<i64>,
) -> Result<HttpResponse, WebError> {
    let (organization_id, actor, token_id) = (
        user.organization.id,
        actor(&req, &user),
        token_id.into_inner(),
    );
    let token = pool
        .run(move |conn| {
            enrollment::revoke(conn, organization_id, token_id, &actor).map_err(|e| match e {
                TokenError::NotFound => WebError::NotFound,
                TokenError::NotActive => WebError::BadRequest(e.to_string()),
                TokenError::NotYours => WebError::NotYours(e.to_string()),
                TokenError::Query(e) => e.into(),
            })
        })
        .await?;
    tracing::info!(token_id = token.id, hint = %token.hint, "enrollment token revoked");
    // The row as the list renders it, from the same query.
    let listed = pool
        .run(move |conn| {
            Ok::<_, WebError>(enrollment::list_recent(
                conn,
                organization_id,
                chrono::Utc::now().naive_utc(),
            )?)
        })
        .await?;
    let now = chrono::Utc::now().naive_utc();
    let row = listed
        .into_iter()
        .find(|t| t.token.id == token_id)
        .ok_or(WebError::NotFound)?;
    let mut response = render_with_status(
        StatusCode::OK,
        &RowFragment {
            token: &TokenRow::new(row, now, &user),
        },
    )?;
    announce(
        &mut response,
        &format!(
            "Revoked token {}. A machine enrolling with it will be refused.",
            token.hint
        ),
        Focus::NextRow,
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_names_the_server_and_leaves_the_token_out() {
        assert_eq!(
            enroll_command("https://granite.example.com"),
            "granite driver enroll --server https://granite.example.com"
        );
    }
}
