//! Content filters that run as stages of the content pipeline: `antivirus` (clamd and the
//! built-in engine, with self-verifying signature updates).

pub mod antivirus;
