//! Content filters: the stages of the content pipeline that look at a whole message, and the
//! post-apply steps of disposal. `antivirus` (clamd and the built-in engine, with
//! self-verifying signature updates), `milter` (external filters over the milter protocol),
//! `antispam` (classifier, rules, sender authentication, reputation); `mime` holds the shared
//! MIME helpers (attachments, magic bytes, zip walks, splicing); `attachment` (strip),
//! `disclaimer`, `archive`, `ratelimit` and `dkim` enforce policy.

pub mod antispam;
pub mod antivirus;
pub mod archive;
pub mod attachment;
pub mod disclaimer;
pub mod dkim;
pub mod milter;
pub mod mime;
pub mod ratelimit;
