//! Running as a Linux system service: what the daemon tells the service manager
//! (`notify`: READY/RELOADING/STOPPING/STATUS/WATCHDOG over `NOTIFY_SOCKET`), where its log
//! goes (`journal`: journald with structured fields, else stderr, through a bounded queue:
//! `log_queue`), dropping root after the
//! privileged start (`privileges`), and the `sendmail` compatibility front end (`sendmail`).
//!
//! Everything here degrades to a no-op outside systemd: no `NOTIFY_SOCKET` means no
//! notifications, no journal means stderr, not root means nothing to drop.

pub mod journal;
pub mod log_queue;
pub mod notify;
pub mod privileges;
pub mod sendmail;
