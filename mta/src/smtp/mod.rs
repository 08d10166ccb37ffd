//! Receiving mail: listeners, the SMTP session state machine and its helpers.

pub mod address;
pub mod auth;
pub mod data;
pub mod disposal;
pub mod message;
pub mod reply;
pub mod server;
pub mod session;
pub mod stream;
pub mod tls;
