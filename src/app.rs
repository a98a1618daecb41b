//! Builds the server from settings. `granite serve` and the tests both start it through
//! [`Application::build`], so what is tested is what runs.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer};
use secrecy::ExposeSecret;

use crate::api;
use crate::api_keys::cache::VerifiedKeys;
use crate::api_keys::rate_limit::RateLimiter;
use crate::api_keys::usage::{FLUSH_EVERY, UsageRecorder};
use crate::config::Settings;
use crate::db::{DatabaseUrl, DbConnection, DbError, Pool};
use crate::machines::contacts::{self, Contacts};
use crate::machines::fleet::{self, Fleet};
use crate::machines::memory::Presences;
use crate::metrics::Metrics;
use crate::ops;
use crate::queue;
use crate::replicas::{self, Subscriber};
use crate::runs::claims::ClaimsInFlight;
use crate::runs::dispatch::Dispatcher;
use crate::runs::group_commit::GroupCommit;
use crate::runs::intake::Intake;
use crate::runs::{leases, retention};
use crate::setup::{self, ConfiguredAdmin, FirstStart};
use crate::users::Email;
use crate::users::password::Password;
use crate::users::throttle::PasswordChecks;
use crate::web as dashboard;
use crate::web::middleware::{session, session_key};

pub struct Application {
    server: Server,
    address: SocketAddr,
    pool: Pool,
    setup_url: Option<String>,
    usage: actix_web::web::Data<UsageRecorder>,
    contacts: actix_web::web::Data<Contacts>,
}

impl Application {
    /// Opens the database (migrating it), performs the first-start set-up, binds the listener.
    /// Start-up work is blocking; it happens once, before the first request.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = Pool::open(&settings.database.database_url, settings.db_pool_size)?;
        tracing::info!(database = %settings.database.database_url.redacted(), "database ready");

        let admin = configured_admin(&settings)?;
        let first_start = setup::on_start(&mut *pool.get()?, admin)?;
        let session_key = session_key::load(
            &mut *pool.get()?,
            settings
                .session_key
                .as_ref()
                .map(ExposeSecret::expose_secret),
        )?;

        ops::assets::fingerprint_all();
        let listener = TcpListener::bind(settings.bind)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.bind))?;
        let address = listener.local_addr()?;
        let setup_url = match &first_start {
            FirstStart::SetupCodeIssued { code } => Some(format!(
                "{}/setup?code={code}",
                settings.public_base_url(address)
            )),
            _ => None,
        };
        report_first_start(&first_start, setup_url.as_deref());

        let usage = actix_web::web::Data::new(UsageRecorder::default());
        spawn_usage_flusher(pool.clone(), usage.clone());
        let contacts = actix_web::web::Data::new(Contacts::default());
        spawn_contact_flusher(pool.clone(), contacts.clone());
        retention::spawn(pool.clone(), settings.run_retention);
        spawn_queue_sampler(pool.clone());
        let metrics = actix_web::web::Data::new(Metrics::default());
        let dispatcher = actix_web::web::Data::new(Dispatcher::new(metrics.clone().into_inner()));
        let replicated = matches!(settings.database.database_url, DatabaseUrl::Postgres(_));
        let keys = actix_web::web::Data::new(VerifiedKeys::new(replicated));
        let limiter =
            actix_web::web::Data::new(RateLimiter::new(pool.clone(), settings.rate_window()));
        let presences = actix_web::web::Data::new(Presences::new(replicated));
        let fleet = actix_web::web::Data::new(Fleet::new(settings.offline_after()));
        spawn_fleet_census(pool.clone(), fleet.clone());
        match &settings.database.database_url {
            DatabaseUrl::Postgres(url) => {
                let dispatcher: Arc<dyn Subscriber> = dispatcher.clone().into_inner();
                let keys: Arc<dyn Subscriber> = keys.clone().into_inner();
                let presences: Arc<dyn Subscriber> = presences.clone().into_inner();
                replicas::spawn_listener(
                    url.clone(),
                    vec![
                        Arc::downgrade(&dispatcher),
                        Arc::downgrade(&keys),
                        Arc::downgrade(&presences),
                    ],
                );
            }
            DatabaseUrl::Sqlite(_) => {
                let presences = Arc::downgrade(&presences.clone().into_inner());
                let fleet = Arc::downgrade(&fleet.clone().into_inner());
                pool.on_machines_changed(move |ids| {
                    if let Some(fleet) = fleet.upgrade() {
                        fleet.changed();
                    }
                    if let Some(presences) = presences.upgrade() {
                        presences.forget(ids);
                    }
                });
            }
        }
        spawn_lease_keeper(pool.clone(), dispatcher.clone(), settings.offline_after());

        let intake =
            actix_web::web::Data::new(Intake::start(pool.clone(), dispatcher.clone().into_inner()));
        let claims = actix_web::web::Data::new(ClaimsInFlight::default());
        let password_checks = actix_web::web::Data::new(PasswordChecks::default());
        let in_flight = actix_web::web::Data::new(ops::in_flight::InFlight::default());
        let latest_check = actix_web::web::Data::new(ops::health::LatestCheck::default());
        let reports = actix_web::web::Data::new(GroupCommit::start(
            pool.clone(),
            dispatcher.clone().into_inner(),
        ));

        let settings = actix_web::web::Data::new(settings);
        let data_pool = actix_web::web::Data::new(pool.clone());
        let data_usage = usage.clone();
        let data_contacts = contacts.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(settings.clone())
                .app_data(data_pool.clone())
                .app_data(data_usage.clone())
                .app_data(keys.clone())
                .app_data(limiter.clone())
                .app_data(data_contacts.clone())
                .app_data(presences.clone())
                .app_data(fleet.clone())
                .app_data(intake.clone())
                .app_data(reports.clone())
                .app_data(claims.clone())
                .app_data(password_checks.clone())
                .app_data(in_flight.clone())
                .app_data(latest_check.clone())
                .app_data(dispatcher.clone())
                .app_data(metrics.clone())
                .configure(api::routes)
                .configure(ops::routes)
                .service(dashboard::scope(session::middleware(
                    &settings,
                    session_key.clone(),
                )))
                // Every response gets the security headers and a log line.
                .wrap(ops::security_headers(settings.https_only()))
                .wrap(from_fn(ops::request_log::log))
        })
        // A client gets 5 s to send a request's head and 1 s to close after the answer; bodies have
        // their own deadline (`api::body::BODY_WITHIN`). A slow client cannot hold a connection.
        .client_request_timeout(std::time::Duration::from_secs(5))
        .client_disconnect_timeout(std::time::Duration::from_secs(1))
        .listen(listener)?
        .shutdown_timeout(30)
        .run();
        tracing::info!(%address, "Granite API Management is listening");
        Ok(Self {
            server,
            address,
            pool,
            setup_url,
            usage,
            contacts,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The one-time setup URL, when this start issued one (no user existed and none was configured).
    pub fn setup_url(&self) -> Option<&str> {
        self.setup_url.as_deref()
    }

    /// Stops the server gracefully when awaited (tests; `granite serve` relies on SIGTERM/Ctrl-C).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM or Ctrl-C, then finishes the requests in flight (up to 30 s) and returns.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await?;
        // What the last seconds tallied and heard is written before the process ends.
        let (pool, usage, contacts) = (self.pool, self.usage, self.contacts);
        let flushed = actix_web::web::block(move || {
            let mut conn = pool.get()?;
            let usage = usage.flush(&mut conn);
            contacts.flush(&mut conn)?;
            usage.map_err(DbError::from)
        })
        .await;
        if let Ok(Err(error)) = flushed {
            tracing::error!(%error, "could not write the last API key usage and machine contacts");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// How often each replica looks for runs whose machine went Offline or was removed.
const LEASE_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Returns the runs of machines that went quiet to the queue (or fails them after their last attempt).
fn spawn_lease_keeper(
    pool: Pool,
    dispatcher: actix_web::web::Data<Dispatcher>,
    offline_after: chrono::Duration,
) {
    actix_web::rt::spawn(async move {
        let mut every = actix_web::rt::time::interval(LEASE_CHECK_EVERY);
        loop {
            every.tick().await;
            let released = dispatcher
                .run(&pool, move |conn, changes| {
                    leases::release_lost(
                        conn,
                        chrono::Utc::now().naive_utc(),
                        offline_after,
                        changes,
                    )
                    .map_err(DbError::from)
                })
                .await;
            if let Err(error) = released {
                tracing::warn!(%error, "could not check run leases");
            }
        }
    });
}

/// Runs `work` on a pooled connection every `period` for as long as the server runs; a failure is
/// logged with `failed` and the next tick tries again.
fn spawn_every<T: Send + 'static>(
    pool: Pool,
    period: Duration,
    failed: &'static str,
    work: impl Fn(&mut DbConnection) -> diesel::QueryResult<T> + Send + Sync + 'static,
) {
    let work = Arc::new(work);
    actix_web::rt::spawn(async move {
        let mut every = actix_web::rt::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let work = work.clone();
            let done = pool
                .run(move |conn| work(conn).map_err(DbError::from))
                .await;
            if let Err(error) = done {
                tracing::warn!(%error, "{failed}");
            }
        }
    });
}

/// Samples queue depth for the depth chart (see [`queue::sample`]).
fn spawn_queue_sampler(pool: Pool) {
    spawn_every(
        pool,
        queue::SAMPLE_EVERY,
        "could not sample queue depth",
        |conn| queue::sample(conn, chrono::Utc::now().naive_utc()),
    );
}

/// Writes the machine contacts each second (see [`Contacts`]).
fn spawn_contact_flusher(pool: Pool, contacts: actix_web::web::Data<Contacts>) {
    spawn_every(
        pool,
        contacts::FLUSH_EVERY,
        "could not write machine contacts; keeping them for the next try",
        move |conn| contacts.flush(conn),
    );
}

/// Keeps each replica's fleet census at most a second old, so dashboard reads seldom take one.
fn spawn_fleet_census(pool: Pool, fleet: actix_web::web::Data<Fleet>) {
    spawn_every(
        pool,
        fleet::FRESH_FOR,
        "could not count the fleet",
        move |conn| fleet.refresh(conn, chrono::Utc::now().naive_utc()),
    );
}

/// Writes the API key usage tallied in memory every second.
fn spawn_usage_flusher(pool: Pool, usage: actix_web::web::Data<UsageRecorder>) {
    spawn_every(
        pool,
        FLUSH_EVERY,
        "could not write API key usage; keeping it for the next try",
        move |conn| usage.flush(conn),
    );
}

/// The admin from GRANITE_ADMIN_EMAIL/GRANITE_ADMIN_PASSWORD, checked before anything is written.
fn configured_admin(settings: &Settings) -> anyhow::Result<Option<ConfiguredAdmin>> {
    match (&settings.admin_email, &settings.admin_password) {
        (None, None) => Ok(None),
        (Some(email), Some(password)) => {
            let email =
                Email::parse(email).map_err(|e| anyhow::anyhow!("GRANITE_ADMIN_EMAIL: {e}"))?;
            let password = Password::parse(password.expose_secret())
                .map_err(|e| anyhow::anyhow!("GRANITE_ADMIN_PASSWORD: {e}"))?;
            Ok(Some(ConfiguredAdmin {
                email,
                password_hash: password.hash(),
            }))
        }
        _ => anyhow::bail!("set both GRANITE_ADMIN_EMAIL and GRANITE_ADMIN_PASSWORD, or neither"),
    }
}

fn report_first_start(first_start: &FirstStart, setup_url: Option<&str>) {
    match (first_start, setup_url) {
        (FirstStart::AdminCreated { email }, _) => {
            tracing::info!(%email, "created the first admin from GRANITE_ADMIN_EMAIL");
        }
        (FirstStart::SetupCodeIssued { .. }, Some(url)) => {
            // The one secret that is meant for the log: whoever reads it may create the first admin.
            tracing::warn!(
                "No admin exists yet. Open {url} to create one \
                 (or restart with GRANITE_ADMIN_EMAIL and GRANITE_ADMIN_PASSWORD set)."
            );
        }
        _ => {}
    }
}
