//! What wraps the dashboard: the session cookie, the CSRF check of every change, and the gate that only
//! lets signed-in users reach the pages behind it.

pub mod csrf;
pub mod session;
pub mod session_key;
pub mod sign_in;
