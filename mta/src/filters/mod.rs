//! Content filters: the stages of the content pipeline that look at a whole message.
//! `milter` asks external filters over the milter protocol.

pub mod milter;
