//! The key that signs and encrypts session cookies: from configuration, or generated once and kept in the
//! database so that restarts and every replica accept the same cookies.

use actix_web::cookie::Key;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::db::{DbConnection, server_settings};

const SETTING: &str = "session_key";
const KEY_BYTES: usize = 64;

pub fn load(conn: &mut DbConnection, configured: Option<&str>) -> anyhow::Result<Key> {
    if let Some(text) = configured {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| anyhow::anyhow!("GRANITE_SESSION_KEY must be base64"))?;
        return Key::try_from(bytes.as_slice()).map_err(|_| {
            anyhow::anyhow!("GRANITE_SESSION_KEY must hold at least {KEY_BYTES} bytes")
        });
    }
    let mut fresh = [0u8; KEY_BYTES];
    getrandom::fill(&mut fresh)
        .map_err(|e| anyhow::anyhow!("no randomness for the session key: {e}"))?;
    let stored = server_settings::get_or_insert(conn, SETTING, &STANDARD.encode(fresh))?;
    let bytes = STANDARD.decode(stored)?;
    Key::try_from(bytes.as_slice())
        .map_err(|_| anyhow::anyhow!("the stored session key is too short"))
}
