//! What templates share: the page layout, server-rendered charts, times shown relative with the
//! exact time on hover, and browsers named the way people call them.

pub mod charts;
pub mod layout;
pub mod time;
pub mod user_agent;
