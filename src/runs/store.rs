//! Storing queued runs: a batch in as few statements as possible, each one kept prepared on its
//! connection, so the intake pays for executing them and not for parsing and planning them again.

use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamp};
use diesel::sqlite::Sqlite;

use super::QueuedRow;
use crate::db::DbConnection;

/// The columns a queued run is stored with, in the order of their values.
macro_rules! columns {
    () => {
        "public_id, organization_id, api_key_id, endpoint, parameters, requires, priority, status, \
         created_at, retried_from_run_id"
    };
}

/// Stores queued runs (a failure stores none of them: one statement on PostgreSQL; on SQLite the
/// caller's transaction, see [`crate::db::write_transaction`]).
pub fn store_queued(conn: &mut DbConnection, rows: &[QueuedRow]) -> QueryResult<()> {
    store_queued_telling(conn, rows, &[])
}

/// [`store_queued`] that also tells the other replicas `messages` on the runs channel, in the same
/// statement on PostgreSQL: they are delivered only if the runs commit, and cost no round trip or
/// commit of their own. (On SQLite there is no other replica.)
pub fn store_queued_telling(
    conn: &mut DbConnection,
    rows: &[QueuedRow],
    messages: &[String],
) -> QueryResult<()> {
    match conn {
        DbConnection::Postgres(pg) => store_postgres(pg, rows, messages)?,
        DbConnection::Sqlite(sqlite) => store_sqlite(sqlite, rows)?,
    }
    Ok(())
}

/// PostgreSQL: the batch as one array per column, so every batch, whatever its size, is the same
/// statement, prepared once per connection (a multi-row `VALUES` list is parsed and planned anew for
/// each batch).
fn store_postgres(
    pg: &mut diesel::PgConnection,
    rows: &[QueuedRow],
    messages: &[String],
) -> QueryResult<()> {
    use diesel::sql_types::Array;
    fn column<'r, T>(rows: &'r [QueuedRow], value: impl Fn(&'r QueuedRow) -> T) -> Vec<T> {
        rows.iter().map(value).collect()
    }
    // With no messages the `pg_notify` selects no row: one statement for both.
    const SQL: &str = concat!(
        "WITH stored AS (INSERT INTO runs (",
        columns!(),
        ") SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)) SELECT ",
        crate::replicas::notify_sql!("$11", "message"),
        " FROM unnest($12::text[]) AS message"
    );
    crate::db::statement::statement(SQL)
        .bind::<Array<Text>, _>(column(rows, |r| r.public_id.as_str()))
        .bind::<Array<BigInt>, _>(column(rows, |r| r.organization_id))
        .bind::<Array<Nullable<BigInt>>, _>(column(rows, |r| r.api_key_id))
        .bind::<Array<Text>, _>(column(rows, |r| r.endpoint.as_str()))
        .bind::<Array<Text>, _>(column(rows, |r| r.parameters.as_str()))
        .bind::<Array<Text>, _>(column(rows, |r| r.requires.as_str()))
        .bind::<Array<Integer>, _>(column(rows, |r| r.priority))
        .bind::<Array<Text>, _>(column(rows, |r| r.status.as_str()))
        .bind::<Array<Timestamp>, _>(column(rows, |r| r.created_at))
        .bind::<Array<Nullable<BigInt>>, _>(column(rows, |r| r.retried_from_run_id))
        .bind::<Text, _>(crate::replicas::Topic::Runs.channel())
        .bind::<Array<Text>, _>(messages)
        .execute(pg)?;
    Ok(())
}

/// SQLite has no arrays to bind, so a batch is stored as multi-row `INSERT … VALUES` statements of a
/// power-of-two number of rows each (20 runs: 16, then 4). There are only nine such statements, so
/// each stays prepared on the connection; preparing a statement for every batch size anew was a
/// third of what storing a batch cost.
fn store_sqlite(sqlite: &mut diesel::SqliteConnection, rows: &[QueuedRow]) -> QueryResult<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(1 << rest.len().ilog2());
        ValuesStatement(chunk).execute(sqlite)?;
        rest = after;
    }
    Ok(())
}

/// `INSERT INTO runs (…) VALUES (…), (…)` for exactly these rows. Unlike diesel's own batch insert,
/// it lets diesel keep the statement prepared (by its text, which depends only on the number of
/// rows).
struct ValuesStatement<'r>(&'r [QueuedRow]);

impl QueryFragment<Sqlite> for ValuesStatement<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(concat!("INSERT INTO runs (", columns!(), ") VALUES "));
        for (i, row) in self.0.iter().enumerate() {
            out.push_sql(if i == 0 { "(" } else { ", (" });
            out.push_bind_param::<Text, _>(&row.public_id)?;
            out.push_sql(", ");
            out.push_bind_param::<BigInt, _>(&row.organization_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Nullable<BigInt>, _>(&row.api_key_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&row.endpoint)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&row.parameters)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&row.requires)?;
            out.push_sql(", ");
            out.push_bind_param::<Integer, _>(&row.priority)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&row.status)?;
            out.push_sql(", ");
            out.push_bind_param::<Timestamp, _>(&row.created_at)?;
            out.push_sql(", ");
            out.push_bind_param::<Nullable<BigInt>, _>(&row.retried_from_run_id)?;
            out.push_sql(")");
        }
        Ok(())
    }
}

impl QueryId for ValuesStatement<'_> {
    type QueryId = ();
    // Cached by its text, which the number of rows fixes.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Conn> RunQueryDsl<Conn> for ValuesStatement<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::schema::runs;
    use crate::db::{DatabaseUrl, Pool, write_transaction};
    use crate::runs::NewRun;

    /// 23 runs go in as statements of 16, 4, 2 and 1 rows, all of them, in the order given.
    #[test]
    fn a_batch_of_any_size_is_stored_whole_and_in_order() {
        let dir = std::env::temp_dir().join(format!(
            "granite-store-{}",
            crate::secret::random_base62(10)
        ));
        let pool = Pool::open(&DatabaseUrl::Sqlite(dir.join("store.db")), 2).unwrap();
        let mut conn = pool.get().unwrap();
        let rows: Vec<QueuedRow> = (0..23)
            .map(|i| {
                let new = NewRun {
                    endpoint: format!("job-{i}"),
                    parameters: serde_json::json!({ "i": i }),
                    requires: vec![],
                    priority: 0,
                };
                QueuedRow::new(1, 1, new)
            })
            .collect();
        // Organization 1 and key 1 exist for the foreign keys.
        diesel::sql_query(
            "INSERT OR IGNORE INTO organizations (id, slug, name, created_at) \
             VALUES (1, 'default', 'Default', CURRENT_TIMESTAMP)",
        )
        .execute(&mut *conn)
        .unwrap();
        diesel::sql_query(
            "INSERT INTO api_keys (id, organization_id, name, secret_hash, hint, created_at) \
             VALUES (1, 1, 'k', 'h', 'p', CURRENT_TIMESTAMP)",
        )
        .execute(&mut *conn)
        .unwrap();
        write_transaction(&mut conn, |conn| store_queued(conn, &rows)).unwrap();
        let stored: Vec<(String, String)> = runs::table
            .order(runs::id)
            .select((runs::public_id, runs::endpoint))
            .load(&mut *conn)
            .unwrap();
        let given: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r.public_id.clone(), r.endpoint.clone()))
            .collect();
        assert_eq!(stored, given);
    }
}
