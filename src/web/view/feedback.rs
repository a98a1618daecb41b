//! What an action says when it is done, and where focus goes next. An htmx action answers with an
//! `HX-Trigger-After-Settle` event (`granite:done`) that `static/app.js` turns into a message in the
//! page's polite live region and a move of focus; an action that leads to another page leaves the
//! message in the session (a flash) for that page to announce.

use actix_web::HttpResponse;
use actix_web::http::header::{HeaderName, HeaderValue};

/// Where focus goes once the page has settled.
pub enum Focus {
    /// The element this CSS selector finds (made focusable if it is not).
    On(String),
    /// The row after the one acted on, or the one before, or its section's heading: for a row that
    /// went away (revoked, removed) or lost the control that had focus.
    NextRow,
}

impl Focus {
    fn as_str(&self) -> &str {
        match self {
            Self::On(selector) => selector,
            Self::NextRow => "next-row",
        }
    }
}

/// Adds the `granite:done` event with `message` and `focus` to an htmx answer.
pub fn announce(response: &mut HttpResponse, message: &str, focus: Focus) {
    let event = serde_json::json!({
        "granite:done": { "message": message, "focus": focus.as_str() }
    });
    let value = ascii_json(&event.to_string());
    response.headers_mut().insert(
        HeaderName::from_static("hx-trigger-after-settle"),
        HeaderValue::from_str(&value).expect("escaped JSON is a valid header value"),
    );
}

/// JSON with every character beyond ASCII written as `\uXXXX`: a header value is read as Latin-1 by
/// the browser, so anything else would arrive garbled (a key named “billing” or 請求).
fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_json_is_ascii_and_still_the_same_json() {
        let json = serde_json::json!({ "m": "Revoked “billing” 請求 🔑\n" }).to_string();
        let escaped = ascii_json(&json);
        assert!(escaped.is_ascii(), "{escaped}");
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back["m"], "Revoked “billing” 請求 🔑\n");
    }
}
