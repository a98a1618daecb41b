//! Server-wide values every replica shares, kept in the `server_settings` table.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error};

use super::DbConnection;
use super::schema::server_settings;

pub fn get(conn: &mut DbConnection, name: &str) -> QueryResult<Option<String>> {
    server_settings::table
        .find(name)
        .select(server_settings::value)
        .first(conn)
        .optional()
}

/// Stores `value` unless the setting exists, and returns what is stored: when several replicas start at
/// once, all of them end up with the first one's value.
pub fn get_or_insert(conn: &mut DbConnection, name: &str, value: &str) -> QueryResult<String> {
    let inserted = diesel::insert_into(server_settings::table)
        .values((
            server_settings::name.eq(name),
            server_settings::value.eq(value),
            server_settings::updated_at.eq(chrono::Utc::now().naive_utc()),
        ))
        .execute(conn);
    match inserted {
        Ok(_) | Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {}
        Err(e) => return Err(e),
    }
    get(conn, name)?.ok_or(Error::NotFound)
}

pub fn set(conn: &mut DbConnection, name: &str, value: &str) -> QueryResult<()> {
    let now = chrono::Utc::now().naive_utc();
    let updated = diesel::update(server_settings::table.find(name))
        .set((
            server_settings::value.eq(value),
            server_settings::updated_at.eq(now),
        ))
        .execute(conn)?;
    if updated == 0 {
        diesel::insert_into(server_settings::table)
            .values((
                server_settings::name.eq(name),
                server_settings::value.eq(value),
                server_settings::updated_at.eq(now),
            ))
            .execute(conn)?;
    }
    Ok(())
}

pub fn delete(conn: &mut DbConnection, name: &str) -> QueryResult<()> {
    diesel::delete(server_settings::table.find(name)).execute(conn)?;
    Ok(())
}
