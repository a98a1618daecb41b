//! The session cookie, typed: it carries the CSRF token of the visitor's forms and, once signed in,
//! the random id of their server-side session ([`crate::users::sessions`]). The cookie is encrypted
//! and signed; it proves nothing on its own: without the session's row, the id opens nothing.

use std::time::Duration;

use actix_session::config::{CookieContentSecurity, PersistentSession, TtlExtensionPolicy};
use actix_session::storage::CookieSessionStore;
use actix_session::{Session, SessionExt, SessionMiddleware};
use actix_web::cookie::{Key, SameSite};
use actix_web::dev::ServiceRequest;

use crate::config::Settings;
use crate::secret::random_base62;
use crate::users::sessions::SessionId;

pub const SESSION_COOKIE: &str = "granite_session";

const SESSION_ID: &str = "sid";
const CSRF_TOKEN: &str = "csrf";
const FLASH: &str = "flash";

pub struct DashboardSession(Session);

impl DashboardSession {
    pub fn new(session: Session) -> Self {
        Self(session)
    }

    pub fn of(req: &ServiceRequest) -> Self {
        Self(req.get_session())
    }

    /// The id of the server-side session the cookie names, if any (whether it is still live is the
    /// database's to say).
    pub fn session_id(&self) -> Option<SessionId> {
        let text = self.0.get::<String>(SESSION_ID).ok().flatten()?;
        SessionId::from_cookie(text)
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

    /// A message for the next page this browser loads (an action that ends on another page).
    pub fn set_flash(&self, message: &str) {
        let _ = self.0.insert(FLASH, message);
    }

    /// The message left for this page, once.
    pub fn take_flash(&self) -> Option<String> {
        self.0.remove_as::<String>(FLASH).and_then(Result::ok)
    }

    /// Carries a new server-side session from now on, with a new CSRF token: nothing planted before
    /// sign-in survives it.
    pub fn sign_in(&self, id: &SessionId) {
        self.0.clear();
        self.0.renew();
        let _ = self.0.insert(SESSION_ID, id.expose());
        let _ = self.0.insert(CSRF_TOKEN, random_base62(32));
    }

    /// Forgets everything; the browser is told to drop the cookie.
    pub fn sign_out(&self) {
        self.0.purge();
    }
}

/// The session cookie: HttpOnly, SameSite=Strict, encrypted, Secure when configured. It lasts as long
/// as a session may (`GRANITE_SESSION_MAX_HOURS`); the server ends idle sessions before that.
pub fn middleware(settings: &Settings, key: Key) -> SessionMiddleware<CookieSessionStore> {
    let lifetime: Duration = settings.session_lifetimes().max;
    SessionMiddleware::builder(CookieSessionStore::default(), key)
        .cookie_name(SESSION_COOKIE.to_owned())
        .cookie_http_only(true)
        .cookie_same_site(SameSite::Strict)
        .cookie_secure(settings.cookies_secure())
        .cookie_content_security(CookieContentSecurity::Private)
        .session_lifecycle(
            PersistentSession::default()
                .session_ttl(actix_web::cookie::time::Duration::seconds(
                    lifetime.as_secs() as i64,
                ))
                .session_ttl_extension_policy(TtlExtensionPolicy::OnStateChanges),
        )
        .build()
}
