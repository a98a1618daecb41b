//! Organizations: every user, key, token, machine and run belongs to exactly one.

use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::schema::organizations;

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = organizations)]
pub struct Organization {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub created_at: chrono::NaiveDateTime,
}

impl Organization {
    /// As the public and driver APIs name it.
    pub fn to_wire(&self) -> crate::wire::OrganizationRef {
        crate::wire::OrganizationRef {
            id: self.id,
            slug: self.slug.clone(),
            name: self.name.clone(),
        }
    }
}

/// The slug that names an organization in public API paths (`/api/{org}/…`): 1–50 chars of `a-z0-9-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrganizationSlug(String);

impl OrganizationSlug {
    pub fn parse(text: &str) -> Result<Self, String> {
        let slug = text.trim();
        let valid_chars = slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if slug.is_empty()
            || slug.len() > 50
            || !valid_chars
            || slug.starts_with('-')
            || slug.ends_with('-')
        {
            return Err(format!(
                "\"{slug}\" is not a valid organization slug: use 1–50 lowercase letters, digits and dashes"
            ));
        }
        Ok(Self(slug.to_owned()))
    }

    /// A slug made from a display name ("Acme Robotics, Inc." → "acme-robotics-inc").
    pub fn from_name(name: &str) -> Self {
        let mut slug = String::new();
        for c in name.trim().chars().flat_map(char::to_lowercase) {
            if c.is_ascii_alphanumeric() {
                slug.push(c);
            } else if !slug.ends_with('-') && !slug.is_empty() {
                slug.push('-');
            }
        }
        let slug: String = slug.trim_end_matches('-').chars().take(50).collect();
        let slug = slug.trim_end_matches('-');
        Self(if slug.is_empty() {
            "default".to_owned()
        } else {
            slug.to_owned()
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub const DEFAULT_SLUG: &str = "default";

pub fn create(
    conn: &mut DbConnection,
    slug: &OrganizationSlug,
    name: &str,
) -> QueryResult<Organization> {
    diesel::insert_into(organizations::table)
        .values((
            organizations::slug.eq(slug.as_str()),
            organizations::name.eq(name.trim()),
            organizations::created_at.eq(chrono::Utc::now().naive_utc()),
        ))
        // Whole-row RETURNING: what MultiConnection supports (not `as_returning`).
        .returning(organizations::all_columns)
        .get_result::<Organization>(conn)
}

/// Every organization, oldest first (the shell's `user add` picks the only one).
pub fn all(conn: &mut DbConnection) -> QueryResult<Vec<Organization>> {
    organizations::table
        .order(organizations::id)
        .select(Organization::as_select())
        .load(conn)
}

pub fn find_by_slug(conn: &mut DbConnection, slug: &str) -> QueryResult<Option<Organization>> {
    organizations::table
        .filter(organizations::slug.eq(slug))
        .select(Organization::as_select())
        .first(conn)
        .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(OrganizationSlug::parse("acme-2").is_ok());
        assert!(OrganizationSlug::parse("Acme").is_err());
        assert!(OrganizationSlug::parse("-acme").is_err());
        assert!(OrganizationSlug::parse("").is_err());
        assert!(OrganizationSlug::parse(&"a".repeat(51)).is_err());
        assert_eq!(
            OrganizationSlug::from_name("Acme Robotics, Inc.").as_str(),
            "acme-robotics-inc"
        );
        assert_eq!(OrganizationSlug::from_name("¡¡¡").as_str(), "default");
    }
}
