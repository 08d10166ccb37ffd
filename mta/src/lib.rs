//! Bulwark: a secure mail gateway. The daemon's modules, named for what they do:
//! `config` (the typed configuration), `smtp` (receiving), `policy` (the filter seam and
//! its first stages: relay control and recipient validation), `queue` (the durable spool),
//! `admin` (the control socket behind `bulwarkctl`), `service` (systemd, journald, privilege
//! drop, the sendmail front end), `quarantine` (the durable store of stopped messages).

pub mod admin;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod filters;
pub mod flow;
pub mod gateway;
pub mod pipeline;
pub mod policy;
pub mod quarantine;
pub mod queue;
pub mod route;
pub mod rules;
pub mod service;
pub mod smtp;
pub mod track;
pub mod transport;
