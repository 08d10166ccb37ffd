//! The control protocol behind `bulwarkctl` and the console. Transports: a unix stream socket
//! (mode 0660, one JSON request line and one JSON response line per connection) and, with
//! `[control] listen`, HTTPS with mutual TLS (`https`, `POST /control`). `protocol` is shared
//! by every end; `server` executes requests in the daemon; `client` is the CLI's socket side;
//! `remote` is the console's federation client; `enroll` makes their certificates; `metrics`
//! serves Prometheus text; `config_edit` the remote configuration requests, `config_history` the versions they applied; `users` the
//! console's users file; `quarantine` answers
//! the quarantine's requests; `certificate` reads expiry dates; `submit` queues the console's own mail.

pub mod certificate;
pub mod client;
pub mod config_edit;
pub mod config_history;
pub mod enroll;
mod http;
pub mod https;
pub mod metrics;
pub mod protocol;
mod quarantine;
pub mod remote;
pub mod server;
mod submit;
pub mod users;
