//! What templates share: the page layout, server-rendered charts, and times shown relative with the
//! exact time on hover.

pub mod charts;
pub mod layout;
pub mod time;
