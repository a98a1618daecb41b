//! The dashboard session: a typed view of the signed, encrypted session cookie.

use std::time::Duration;

use actix_session::config::{CookieContentSecurity, PersistentSession, TtlExtensionPolicy};
use actix_session::storage::CookieSessionStore;
use actix_session::{Session, SessionExt, SessionMiddleware};
use actix_web::cookie::{Key, SameSite};
use actix_web::dev::ServiceRequest;

use crate::config::Settings;

use crate::secret::random_base62;

pub const SESSION_COOKIE: &str = "granite_session";

const USER_ID: &str = "uid";
const CSRF_TOKEN: &str = "csrf";
/// Unix seconds of the last request, so an idle session ends on the server's clock, not the browser's.
const LAST_ACTIVE: &str = "seen";
/// Refreshing the cookie on every request would rewrite it for nothing; once a minute is precise enough
/// (or a quarter of the idle limit, when that is shorter).
const TOUCH_EVERY_SECS: i64 = 60;

pub struct DashboardSession(Session);

impl DashboardSession {
    pub fn new(session: Session) -> Self {
        Self(session)
    }

    pub fn of(req: &ServiceRequest) -> Self {
        Self(req.get_session())
    }

    /// The signed-in user, unless the session has been idle longer than `idle`.
    pub fn active_user_id(&self, idle: Duration) -> Option<i64> {
        let user_id = self.0.get::<i64>(USER_ID).ok().flatten()?;
        let last_active = self.0.get::<i64>(LAST_ACTIVE).ok().flatten()?;
        let idle_secs = now_secs() - last_active;
        (idle_secs >= 0 && (idle_secs as u64) < idle.as_secs()).then_some(user_id)
    }

    /// Marks the session active now (at most once a minute, or every quarter of a shorter idle limit).
    pub fn touch(&self, idle: Duration) {
        let every = TOUCH_EVERY_SECS.min(idle.as_secs() as i64 / 4);
        let last_active = self.0.get::<i64>(LAST_ACTIVE).ok().flatten().unwrap_or(0);
        if now_secs() - last_active >= every {
            let _ = self.0.insert(LAST_ACTIVE, now_secs());
        }
    }

    pub fn csrf_token(&self) -> Option<String> {
        self.0.get::<String>(CSRF_TOKEN).ok().flatten()
    }

    /// The session's CSRF token, made on first use (signed-out visitors need one for the sign-in form).
    pub fn ensure_csrf_token(&self) -> String {
        if let Some(token) = self.csrf_token() {
            return token;
        }
        let token = random_base62(32);
        let _ = self.0.insert(CSRF_TOKEN, &token);
        token
    }

    /// Starts a fresh session for `user_id`: a new session and a new CSRF token, so nothing planted
    /// before sign-in survives it.
    pub fn sign_in(&self, user_id: i64) {
        self.0.clear();
        self.0.renew();
        let _ = self.0.insert(USER_ID, user_id);
        let _ = self.0.insert(CSRF_TOKEN, random_base62(32));
        let _ = self.0.insert(LAST_ACTIVE, now_secs());
    }

    pub fn sign_out(&self) {
        self.0.purge();
    }
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The session cookie: HttpOnly, SameSite=Strict, encrypted, Secure when configured.
pub fn middleware(settings: &Settings, key: Key) -> SessionMiddleware<CookieSessionStore> {
    let idle = settings.session_idle();
    SessionMiddleware::builder(CookieSessionStore::default(), key)
        .cookie_name(SESSION_COOKIE.to_owned())
        .cookie_http_only(true)
        .cookie_same_site(SameSite::Strict)
        .cookie_secure(settings.cookies_secure())
        .cookie_content_security(CookieContentSecurity::Private)
        .session_lifecycle(
            PersistentSession::default()
                .session_ttl(actix_web::cookie::time::Duration::seconds(
                    idle.as_secs() as i64
                ))
                .session_ttl_extension_policy(TtlExtensionPolicy::OnStateChanges),
        )
        .build()
}
