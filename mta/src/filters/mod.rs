//! Content filters that are conditions or actions of the rule table, and the post-apply steps
//! of disposal: shared MIME helpers (`mime`), attachment stripping, disclaimers, the local
//! archive, outbound rate limits and DKIM signing.

pub mod archive;
pub mod attachment;
pub mod disclaimer;
pub mod dkim;
pub mod mime;
pub mod ratelimit;
