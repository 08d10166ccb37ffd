//! The control socket behind `bulwarkctl`: a unix stream socket (mode 0660, so the daemon's
//! user and group may manage it) carrying one JSON request line and one JSON response line
//! per connection. `protocol` is shared by both ends; `server` runs in the daemon; `client`
//! in the CLI; `quarantine` answers the quarantine's requests.

pub mod client;
pub mod protocol;
mod quarantine;
pub mod server;
