//! MIME helpers shared by the filters: what a message's attachments are (decoded names,
//! declared and detected types, sizes, zip members), and splicing a raw message by part offsets.
//!
//! # Invariants
//! - Everything here works on the MIME tree `pipeline::MessageContent` parsed once; nothing
//!   re-parses the message.
//! - Archive walks are bounded in depth, members and bytes (`archive::Limits`), whatever the
//!   archive's headers claim.

pub mod archive;
pub mod inventory;
pub mod magic;
pub mod names;
pub mod splice;

pub use inventory::{inventory, Attachment, Inventory};
