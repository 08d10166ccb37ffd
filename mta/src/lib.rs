//! Bulwark: a secure mail gateway. The daemon's modules, named for what they do:
//! `config` (the typed configuration, the ground floor: of the daemon it uses only the
//! next-hop syntax check of `route`),
//! `smtp` (receiving), `policy` (the filter seam and its first stages: relay control and
//! recipient validation), `queue` (the durable spool), `route` (next hops, MX and DNS),
//! `deliver` (the queue manager, connections, attempts, outcomes and notices),
//! `smtp_client` (the outbound SMTP client delivery and callouts share), `flow`
//! (connection-rate limits and abuse blocks), `bounded` (size-bounded per-address tables),
//! `gateway` (the shared running state), `admin` (the control socket behind `bulwarkctl`),
//! `service` (systemd, journald, privilege drop, the sendmail front end), `pipeline` (the
//! content filters at end of data), `rules`, `filters` (anti-virus, anti-spam, milters),
//! `quarantine` (the durable store of stopped messages), `track` (message tracking).

pub mod admin;
pub mod bounded;
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
pub mod smtp_client;
pub mod telemetry;
pub mod tls_policy;
pub mod track;
pub mod transport;
