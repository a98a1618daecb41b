//! Text Granite stores. PostgreSQL cannot store the NUL character in text (SQLite can), so text
//! holding it is refused where it comes in, with the field named, on both backends alike: the same
//! request gets the same answer whichever database is behind the server.

/// Whether `text` can be stored (it holds no NUL character).
pub fn storable(text: &str) -> bool {
    !text.contains('\0')
}

/// The sentence that says why `field` was refused.
pub fn nul_refused(field: &str) -> String {
    format!("{field} must not contain the NUL character (\\u0000).")
}

/// The path of the first string in `value`, key or value, that cannot be stored: `error.message`,
/// `capabilities[2]`, or `.` for the value itself.
pub fn first_unstorable(value: &serde_json::Value) -> Option<String> {
    fn walk(value: &serde_json::Value, path: &str) -> Option<String> {
        let field = |name: &str| match path {
            "" => name.to_owned(),
            parent => format!("{parent}.{name}"),
        };
        match value {
            serde_json::Value::String(text) if !storable(text) => Some(if path.is_empty() {
                ".".into()
            } else {
                path.to_owned()
            }),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| walk(item, &format!("{path}[{i}]"))),
            serde_json::Value::Object(fields) => fields.iter().find_map(|(name, item)| {
                if storable(name) {
                    walk(item, &field(name))
                } else {
                    Some(if path.is_empty() {
                        ".".into()
                    } else {
                        path.to_owned()
                    })
                }
            }),
            _ => None,
        }
    }
    walk(value, "")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_first_nul_is_found_by_its_path() {
        assert_eq!(
            first_unstorable(&json!({"name": "vm-1", "tags": ["a", 1]})),
            None
        );
        assert_eq!(
            first_unstorable(&json!({"error": {"type": "x", "message": "bad\u{0}"}})).as_deref(),
            Some("error.message")
        );
        assert_eq!(
            first_unstorable(&json!({"capabilities": ["shell", "s\u{0}p"]})).as_deref(),
            Some("capabilities[1]")
        );
        assert_eq!(
            first_unstorable(&json!({"result": {"k\u{0}": 1}})).as_deref(),
            Some("result")
        );
        assert_eq!(first_unstorable(&json!("\u{0}")).as_deref(), Some("."));
        assert!(storable("Ünïcode ✓") && !storable("a\0b"));
    }
}
