//! Storage: one connection type for SQLite and PostgreSQL, its pool, and the migrations of each backend.

pub mod backup;
pub mod checkpoint;
pub mod machine_changes;
pub mod readiness;
pub mod schema;
pub mod server_settings;
mod sqlite_library;
pub mod statement;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use machine_changes::MachineChanges;

/// How long a SQLite connection waits for another writer before giving up.
const BUSY_TIMEOUT_MS: u32 = 5000;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Any database connection Granite speaks. Queries written once against this type run on both.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgres(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

/// The backend type of [`DbConnection`], for boxed queries.
pub type DbConnectionBackend = <DbConnection as diesel::Connection>::Backend;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Pool(#[from] r2d2::PoolError),
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("database task was cancelled")]
    Cancelled,
    /// The shared transaction this work was part of failed (group commit): every caller hears it.
    #[error("{0}")]
    Shared(std::sync::Arc<DbError>),
}

/// Where the data lives, parsed from `GRANITE_DATABASE_URL`. `Debug` shows it without its password.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("a sqlite:// URL needs a file path, e.g. sqlite://granite.db".into());
            }
            Ok(Self::Sqlite(PathBuf::from(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(url.to_owned()))
        } else {
            Err("the database URL must start with sqlite:// or postgres://".into())
        }
    }

    /// The URL without any password, for log lines.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres(url) => redact_password(url),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

/// The URL without its password, wherever it might be. First every `password` or `sslpassword`
/// parameter goes (libpq reads `?password=` too; a parameter's name is compared decoded, and its value
/// may hold `@`); then everything between the user name and the last `@` left (a password may hold
/// `@`, `/` or `?` unencoded).
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a database URL that does not parse)".to_owned();
    };
    let rest = without_password_parameters(rest);
    let (user, place) = match rest.rsplit_once('@') {
        Some((userinfo, place)) => (
            format!("{}@", userinfo.split(':').next().unwrap_or_default()),
            place,
        ),
        None => (String::new(), rest.as_str()),
    };
    format!("{scheme}://{user}{place}")
}

/// `text` without the pieces (after a `?` or `&`) that set a password; the pieces kept follow the
/// first one as a query again (`?a&b`).
fn without_password_parameters(text: &str) -> String {
    let mut pieces = text.split(['?', '&']);
    let mut kept = pieces.next().unwrap_or_default().to_owned();
    let parameters: Vec<&str> = pieces
        .filter(|piece| {
            let Some((name, _)) = piece.split_once('=') else {
                return !piece.is_empty();
            };
            let name: String = form_urlencoded::parse(name.as_bytes())
                .map(|(n, _)| n.into_owned())
                .collect();
            !name.eq_ignore_ascii_case("password") && !name.eq_ignore_ascii_case("sslpassword")
        })
        .collect();
    if !parameters.is_empty() {
        kept.push('?');
        kept.push_str(&parameters.join("&"));
    }
    kept
}

/// Opens connections of the backend the URL names. Written by hand rather than the derived
/// `establish`, which tries every backend in turn and hides the real error when PostgreSQL is down.
#[derive(Clone, Debug)]
pub struct ConnectionManager {
    url: DatabaseUrl,
    machine_changes: Arc<MachineChanges>,
}

/// A pooled connection and when it was last handed back. Derefs to [`DbConnection`].
pub struct Pooled {
    conn: DbConnection,
    returned_at: Instant,
    /// SQLite: machines its writes changed, handed on as it comes back to the pool.
    changed: Option<machine_changes::Pending>,
}

impl std::ops::Deref for Pooled {
    type Target = DbConnection;
    fn deref(&self) -> &DbConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut DbConnection {
        &mut self.conn
    }
}

/// A connection taken from the pool; back to it when dropped. Derefs to [`DbConnection`].
pub struct Checkout(r2d2::PooledConnection<ConnectionManager>);

impl std::ops::Deref for Checkout {
    type Target = DbConnection;
    fn deref(&self) -> &DbConnection {
        &self.0.conn
    }
}

impl std::ops::DerefMut for Checkout {
    fn deref_mut(&mut self) -> &mut DbConnection {
        &mut self.0.conn
    }
}

/// Log size (pages) from which a connection checkpoints SQLite's log itself after a commit: only if
/// the checkpoint thread has fallen far behind.
const BACKSTOP_CHECKPOINT_FRAMES: i32 = 5 * checkpoint::RESTART_FROM_FRAMES;

/// A connection handed back this recently is not pinged again before its next use: under load the
/// pool hands out connections without a `SELECT 1` round trip each, while one that sat idle (a
/// database restart may have closed it) is checked first.
const TRUSTED_FOR: Duration = Duration::from_secs(1);

impl ConnectionManager {
    /// A connection as every use wants it (SQLite: busy timeout, foreign keys, WAL's durability).
    fn open(&self) -> Result<DbConnection, r2d2::Error> {
        Ok(match &self.url {
            DatabaseUrl::Postgres(url) => diesel::PgConnection::establish(url)
                .map(DbConnection::Postgres)
                .map_err(r2d2::Error::ConnectionError)?,
            DatabaseUrl::Sqlite(path) => {
                sqlite_library::configure();
                let mut conn = diesel::SqliteConnection::establish(&path.to_string_lossy())
                    .map_err(r2d2::Error::ConnectionError)?;
                // Per connection: wait for a writer instead of failing with SQLITE_BUSY, enforce
                // foreign keys, and keep WAL's durability/throughput trade-off sensible. Statement
                // journals (every insert that fires a trigger inside a batch has one) stay in memory
                // instead of a temporary file. The log is checkpointed by a thread of its own
                // (`checkpoint`); a connection checkpoints only if that falls far behind.
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; PRAGMA foreign_keys = ON; \
                     PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY; \
                     PRAGMA wal_autocheckpoint = {BACKSTOP_CHECKPOINT_FRAMES};",
                ))
                .map_err(r2d2::Error::QueryError)?;
                DbConnection::Sqlite(conn)
            }
        })
    }
}

impl ManageConnection for ConnectionManager {
    type Connection = Pooled;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<Pooled, r2d2::Error> {
        let mut conn = self.open()?;
        let changed = match &mut conn {
            DbConnection::Sqlite(sqlite) => {
                Some(machine_changes::watch(sqlite).map_err(r2d2::Error::QueryError)?)
            }
            DbConnection::Postgres(_) => None,
        };
        Ok(Pooled {
            conn,
            returned_at: Instant::now(),
            changed,
        })
    }

    fn is_valid(&self, pooled: &mut Pooled) -> Result<(), r2d2::Error> {
        if pooled.returned_at.elapsed() < TRUSTED_FOR {
            return Ok(());
        }
        pooled
            .conn
            .batch_execute("SELECT 1")
            .map_err(r2d2::Error::QueryError)
    }

    /// Called as a connection goes back to the pool: one left inside a broken transaction is dropped.
    /// Its transactions have ended, so the machines it changed are handed on (SQLite) or announced
    /// (PostgreSQL) here.
    fn has_broken(&self, pooled: &mut Pooled) -> bool {
        use diesel::r2d2::R2D2Connection;
        pooled.returned_at = Instant::now();
        if let Some(changed) = &pooled.changed {
            self.machine_changes.hand_on(changed);
        }
        match &mut pooled.conn {
            DbConnection::Postgres(pg) => {
                if pg.is_broken() {
                    return true;
                }
                // A connection that cannot announce is not trusted with the next request either.
                machine_changes::announce(pg)
                    .inspect_err(
                        |error| tracing::warn!(%error, "could not announce changed machines"),
                    )
                    .is_err()
            }
            DbConnection::Sqlite(sqlite) => sqlite.is_broken(),
        }
    }
}

/// The connection pool. Cheap to clone; every handler reaches the database through [`Pool::run`].
#[derive(Clone)]
pub struct Pool {
    inner: r2d2::Pool<ConnectionManager>,
    url: DatabaseUrl,
    machine_changes: Arc<MachineChanges>,
    /// Threads that serve the pool (SQLite's checkpoints) stop once every clone is gone.
    _alive: Arc<()>,
}

impl Pool {
    /// Connects, creating the SQLite file and its folder when missing, and applies pending migrations.
    pub fn open(url: &DatabaseUrl, max_size: u32) -> anyhow::Result<Self> {
        if let DatabaseUrl::Sqlite(path) = url {
            prepare_sqlite_file(path)?;
        }
        let manager = ConnectionManager {
            url: url.clone(),
            machine_changes: Arc::default(),
        };
        // Before the pool opens its connections: they set up triggers on the tables migrations create.
        let mut first = manager.open()?;
        migrate(&mut first)?;
        let machine_changes = manager.machine_changes.clone();
        let inner = r2d2::Pool::builder()
            .max_size(max_size)
            // Open connections as load needs them rather than all at start: replicas share one server.
            .min_idle(Some(2.min(max_size)))
            .connection_timeout(Duration::from_secs(10))
            .build(manager)
            .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", url.redacted()))?;
        let alive = Arc::new(());
        if let DbConnection::Sqlite(conn) = first {
            checkpoint::spawn(conn, Arc::downgrade(&alive));
        }
        Ok(Self {
            inner,
            url: url.clone(),
            machine_changes,
            _alive: alive,
        })
    }

    /// On SQLite, `listener` hears which machines each write changed once it has committed (on
    /// PostgreSQL the replicas' channel carries them: `replicas::Topic::Machines`).
    pub fn on_machines_changed(&self, listener: impl Fn(Vec<i64>) + Send + Sync + 'static) {
        self.machine_changes.listen(listener);
    }

    /// The most connections the pool opens.
    pub fn max_size(&self) -> u32 {
        self.inner.max_size()
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// A connection for code that is already off the async executor (CLI commands, start-up).
    pub fn get(&self) -> Result<Checkout, DbError> {
        Ok(Checkout(self.inner.get()?))
    }

    /// Runs blocking database work on actix's thread pool, so request handlers never block a worker.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let pool = self.inner.clone();
        actix_web::web::block(move || {
            let mut conn = pool.get().map_err(DbError::from)?;
            work(&mut conn.conn)
        })
        .await
        .map_err(|_| E::from(DbError::Cancelled))?
    }
}

/// Applies pending migrations; replicas starting together on PostgreSQL take turns.
fn migrate(conn: &mut DbConnection) -> anyhow::Result<()> {
    let applied = match conn {
        DbConnection::Sqlite(conn) => {
            conn.batch_execute("PRAGMA journal_mode = WAL;")?;
            conn.run_pending_migrations(SQLITE_MIGRATIONS)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .len()
        }
        DbConnection::Postgres(conn) => {
            // The lock ends with the transaction.
            conn.transaction(|conn| {
                conn.batch_execute("SELECT pg_advisory_xact_lock(7405141)")?;
                conn.run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|v| v.len())
                    .map_err(|e| diesel::result::Error::QueryBuilderError(e.to_string().into()))
            })?
        }
    };
    if applied > 0 {
        tracing::info!(applied, "database migrations applied");
    }
    Ok(())
}

/// A transaction that will write. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`), so
/// concurrent writers queue on the busy timeout instead of failing when a read lock cannot be upgraded;
/// on PostgreSQL it is an ordinary transaction. Nested `transaction` calls inside become savepoints.
pub fn write_transaction<T, E, F>(conn: &mut DbConnection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    if matches!(conn, DbConnection::Postgres(_)) || in_transaction(conn)? {
        // Inside a transaction (group commit), a savepoint: the write lock is already held.
        return conn.transaction(work);
    }
    // The enum delegates its transaction state to the inner connection, so a transaction begun on the
    // inner one is the enum's transaction too.
    fn inner(conn: &mut DbConnection) -> &mut diesel::SqliteConnection {
        match conn {
            DbConnection::Sqlite(sqlite) => sqlite,
            DbConnection::Postgres(_) => unreachable!("only called for SQLite"),
        }
    }
    AnsiTransactionManager::begin_transaction_sql(inner(conn), "BEGIN IMMEDIATE")?;
    match work(conn) {
        Ok(value) => match AnsiTransactionManager::commit_transaction(inner(conn)) {
            Ok(()) => Ok(value),
            Err(error) => {
                let _ = AnsiTransactionManager::rollback_transaction(inner(conn));
                Err(error.into())
            }
        },
        Err(error) => {
            let _ = AnsiTransactionManager::rollback_transaction(inner(conn));
            Err(error)
        }
    }
}

/// Whether a transaction is open on the connection; an error if diesel lost track of it (a failed
/// rollback: the database may have ended the transaction on its own).
pub(crate) fn in_transaction(conn: &mut DbConnection) -> diesel::QueryResult<bool> {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    let depth = match conn {
        DbConnection::Sqlite(sqlite) => {
            AnsiTransactionManager::transaction_manager_status_mut(sqlite).transaction_depth()?
        }
        DbConnection::Postgres(pg) => {
            AnsiTransactionManager::transaction_manager_status_mut(pg).transaction_depth()?
        }
    };
    Ok(depth.is_some())
}

/// Creates the database's folder (readable by this user only) and the file itself with mode 0600
/// before SQLite opens it; SQLite gives its `-wal` and `-shm` files the database file's mode.
fn prepare_sqlite_file(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_dir_builder()
            .create(dir)
            .map_err(|e| anyhow::anyhow!("cannot create the folder {}: {e}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create the database {}: {e}", path.display()))?;
    Ok(())
}

fn private_dir_builder() -> std::fs::DirBuilder {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_backends_and_refuses_others() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/g.db"),
            Ok(DatabaseUrl::Sqlite("data/g.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/g.db"),
            Ok(DatabaseUrl::Sqlite("/var/g.db".into()))
        );
        assert!(matches!(
            DatabaseUrl::parse("postgres://u@h/db"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!(DatabaseUrl::parse("mysql://h/db").is_err());
        assert!(DatabaseUrl::parse("sqlite://").is_err());
    }

    #[test]
    fn redacts_passwords() {
        let url = DatabaseUrl::parse("postgres://app:hunter2@db:5432/granite").unwrap();
        assert_eq!(url.redacted(), "postgres://app@db:5432/granite");
        assert!(!format!("{url:?}").contains("hunter2"));
        // Unencoded `@`, `/` and `?` in a password, and a password in the query.
        for (url, shown) in [
            (
                "postgres://app:p@ss@db/granite",
                "postgres://app@db/granite",
            ),
            (
                "postgres://app:a/b?c@db/granite",
                "postgres://app@db/granite",
            ),
            (
                "postgres://app@db/granite?password=s3cret&sslmode=require",
                "postgres://app@db/granite?sslmode=require",
            ),
            ("postgres://app@db/g?password=p@ss", "postgres://app@db/g"),
            (
                "postgres://app@db/g?pass%77ord=p@ss&x=1",
                "postgres://app@db/g?x=1",
            ),
            (
                "postgres://app:a@b@db/g?options=-c%20x",
                "postgres://app@db/g?options=-c%20x",
            ),
            ("postgresql://db/granite", "postgresql://db/granite"),
        ] {
            let redacted = DatabaseUrl::parse(url).unwrap().redacted();
            assert_eq!(redacted, shown);
            for secret in ["ss", "a/b", "s3cret", "p@"] {
                assert!(
                    !redacted.contains(secret) || shown.contains(secret),
                    "{redacted}"
                );
            }
        }
    }
}
