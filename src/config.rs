//! Typed settings: every `granite serve` flag and its environment variable. Nothing else reads the
//! environment.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, FromArgMatches};
use secrecy::SecretString;

use crate::db::DatabaseUrl;
use crate::runs::retention::RetentionDays;

#[derive(Args, Clone, Debug)]
pub struct DatabaseArgs {
    /// Where data lives: sqlite://PATH (embedded, the default) or postgres://USER@HOST/DB (scale-out:
    /// several `granite serve` replicas on one database). Migrations run at start.
    #[arg(long = "database-url", env = "GRANITE_DATABASE_URL", default_value = "sqlite://granite.db",
          value_parser = DatabaseUrl::parse, hide_env_values = true)]
    pub database_url: DatabaseUrl,
}

/// Every setting of `granite serve`. `Debug` shows secrets as `[REDACTED]`.
#[derive(Args, Clone, Debug)]
pub struct Settings {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Address to listen on.
    #[arg(long, env = "GRANITE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// With GRANITE_ADMIN_PASSWORD: when no user exists yet, the first start creates this admin in a
    /// default organization. Without both, the log prints a one-time setup URL instead.
    #[arg(long, env = "GRANITE_ADMIN_EMAIL")]
    pub admin_email: Option<String>,

    /// Password of the first admin (see --admin-email). Prefer the environment variable to the flag.
    #[arg(long, env = "GRANITE_ADMIN_PASSWORD", hide_env_values = true, value_parser = secret_value)]
    pub admin_password: Option<SecretString>,

    /// Interval, in seconds, the server tells drivers to heartbeat at.
    #[arg(long, env = "GRANITE_HEARTBEAT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_secs: u64,

    /// A machine with no contact for this many seconds is Offline.
    #[arg(long, env = "GRANITE_OFFLINE_AFTER_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub offline_after_secs: u64,

    /// Default lifetime, in hours, of an unused enrollment token (at most 168).
    #[arg(long, env = "GRANITE_ENROLLMENT_TTL_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=168))]
    pub enrollment_ttl_hours: u64,

    /// Key that signs and encrypts session cookies: 64 bytes in base64. When unset, one is generated
    /// on first start and kept in the database, so restarts and replicas share it.
    #[arg(long, env = "GRANITE_SESSION_KEY", hide_env_values = true, value_parser = secret_value)]
    pub session_key: Option<SecretString>,

    /// Sign out after this many minutes without a request.
    #[arg(long, env = "GRANITE_SESSION_IDLE_MINUTES", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=43200))]
    pub session_idle_minutes: u64,

    /// The idle limit exactly, overriding the minutes above (for tests and embedders; no flag).
    #[arg(skip)]
    pub session_idle_exact: Option<Duration>,

    /// End a session this many hours after sign-in, however active (Granite: 7 days).
    #[arg(long, env = "GRANITE_SESSION_MAX_HOURS", default_value_t = 168, value_parser = clap::value_parser!(u64).range(1..=8760))]
    pub session_max_hours: u64,

    /// The absolute lifetime exactly, overriding the hours above (for tests; no flag).
    #[arg(skip)]
    pub session_max_exact: Option<Duration>,

    /// Mark session cookies Secure. Turn on when users reach Granite over HTTPS (e.g. behind a
    /// TLS-terminating proxy); GRANITE_PUBLIC_URL starting with https:// turns it on too.
    #[arg(long, env = "GRANITE_SECURE_COOKIES", default_value_t = false)]
    pub secure_cookies: bool,

    /// The URL users reach this server at (e.g. https://granite.example.com), used in printed links.
    /// Defaults to http://BIND.
    #[arg(long, env = "GRANITE_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Bearer token `GET /metrics` requires. Unset, /metrics answers loopback peers only (a scraper
    /// on the same machine); it never lists organizations either way.
    #[arg(long, env = "GRANITE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Proxies (CIDRs, comma-separated, e.g. 10.0.0.0/8) whose X-Forwarded-For names the client. From
    /// any other peer the header is ignored.
    #[arg(long, env = "GRANITE_TRUSTED_PROXIES", default_value = "", value_parser = crate::ops::client_address::parse_trusted)]
    pub trusted_proxies: crate::ops::client_address::TrustedProxies,

    /// Most database connections one replica opens.
    #[arg(long, env = "GRANITE_DB_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=512))]
    pub db_pool_size: u32,

    /// Finished runs (with their attempts) and API key usage older than this many days are deleted in
    /// the background. At least 1.
    #[arg(long = "run-retention-days", value_name = "DAYS", env = "GRANITE_RUN_RETENTION_DAYS",
          default_value = "30", value_parser = run_retention)]
    pub run_retention: RetentionDays,

    /// Default number of public-API calls a key may make per minute (0 = unlimited); an admin may
    /// set a key's own limit on the dashboard.
    #[arg(long, env = "GRANITE_RATE_LIMIT_PER_MINUTE", default_value_t = 600,
          value_parser = clap::value_parser!(i64).range(0..=crate::api_keys::rate_limit::MAX_LIMIT))]
    pub rate_limit_per_minute: i64,

    /// The rate-limit window exactly, instead of a minute (for tests; no flag).
    #[arg(skip)]
    pub rate_window_exact: Option<Duration>,
}

/// A secret setting: kept as [`SecretString`], so `Debug` output (and any log of the settings) shows
/// it redacted.
fn secret_value(text: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(text.to_owned()))
}

/// The retention, its error naming the variable: it is usually set in an environment file, where the
/// flag clap names would not be found.
fn run_retention(text: &str) -> Result<RetentionDays, String> {
    RetentionDays::parse(text).map_err(|e| format!("GRANITE_RUN_RETENTION_DAYS: {e}"))
}

impl Settings {
    /// The defaults of `granite serve` with no flags and no environment, pointed at one database and
    /// address (tests, `granite demo`). The defaults themselves are the `#[arg]` attributes above.
    pub fn new(database_url: DatabaseUrl, bind: SocketAddr) -> Self {
        let command = Settings::augment_args(clap::Command::new("granite"))
            .mut_args(|arg| arg.env(None))
            .no_binary_name(true);
        let matches = command
            .try_get_matches_from(Vec::<String>::new())
            .expect("the defaults parse");
        let mut settings =
            Settings::from_arg_matches(&matches).expect("the defaults are valid settings");
        settings.database.database_url = database_url;
        settings.bind = bind;
        settings
    }

    pub fn offline_after(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.offline_after_secs as i64)
    }

    /// The window per-key rate limits count in: a minute.
    pub fn rate_window(&self) -> Duration {
        self.rate_window_exact.unwrap_or(Duration::from_secs(60))
    }

    pub fn session_idle(&self) -> Duration {
        self.session_idle_exact
            .unwrap_or(Duration::from_secs(self.session_idle_minutes * 60))
    }

    /// How long dashboard sessions last: idle, and at most.
    pub fn session_lifetimes(&self) -> crate::users::sessions::Lifetimes {
        crate::users::sessions::Lifetimes {
            idle: self.session_idle(),
            max: self
                .session_max_exact
                .unwrap_or(Duration::from_secs(self.session_max_hours * 3600)),
        }
    }

    pub fn cookies_secure(&self) -> bool {
        self.secure_cookies || self.https_only()
    }

    /// Users reach this server over HTTPS only (`GRANITE_PUBLIC_URL` is https): browsers are told to
    /// keep to HTTPS (HSTS).
    pub fn https_only(&self) -> bool {
        self.public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
    }

    /// Base URL for links printed to the log, e.g. the one-time setup URL.
    pub fn public_base_url(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{bound}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_flags_defaults_and_secrets_stay_out_of_debug() {
        let mut settings = Settings::new(
            DatabaseUrl::parse("postgres://granite:db-secret@db/granite").unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        );
        assert_eq!(settings.heartbeat_secs, 10);
        assert_eq!(settings.offline_after_secs, 30);
        assert_eq!(settings.enrollment_ttl_hours, 24);
        assert_eq!(settings.session_idle_minutes, 120);
        assert_eq!(settings.session_max_hours, 168);
        assert_eq!(settings.db_pool_size, 16);
        assert_eq!(settings.run_retention.days(), 30);
        assert_eq!(settings.rate_limit_per_minute, 600);
        assert!(!settings.secure_cookies);
        assert!(settings.admin_password.is_none() && settings.session_key.is_none());
        settings.admin_password = Some("hunter2 hunter2".into());
        settings.session_key = Some("c2Vzc2lvbiBrZXkgbWF0ZXJpYWw=".into());
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("db-secret"), "{shown}");
        assert!(!shown.contains("c2Vzc2lvbiBrZXkgbWF0ZXJpYWw"), "{shown}");
    }
}
