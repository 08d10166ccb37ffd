//! Content filters: the stages of the content pipeline that look at a whole message, and the
//! post-apply steps of disposal. `milter` asks external filters over the milter protocol;
//! `mime` holds the shared MIME helpers (attachments, magic bytes, zip walks, splicing);
//! `attachment` (strip), `disclaimer`, `archive`, `ratelimit` and `dkim` enforce policy.

pub mod archive;
pub mod attachment;
pub mod disclaimer;
pub mod dkim;
pub mod milter;
pub mod mime;
pub mod ratelimit;
