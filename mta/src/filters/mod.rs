//! Content filters: the stages of the content pipeline that look at a whole message.
//! `antivirus` (clamd and the built-in engine, with self-verifying signature updates),
//! `milter` (external filters over the milter protocol), `antispam` (classifier, rules,
//! sender authentication, reputation).

pub mod antispam;
pub mod antivirus;
pub mod milter;
