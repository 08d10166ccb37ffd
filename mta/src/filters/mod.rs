//! Content filters: stages of the pipeline (`pipeline::Stage`) that scan a message and say
//! what should become of it. Each filter is a directory of its own.

pub mod antispam;
