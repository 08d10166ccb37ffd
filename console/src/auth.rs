//! Who may do what: logins (Argon2id password, TOTP when the user has one or is an admin and
//! `require_totp_for_admins`), sessions, the login rate limit, roles.
//!
//! Invariants: a session token and its CSRF token are 32 random bytes each; a session ends
//! after `session_idle` unused or `session_lifetime` after login, whichever comes first; the
//! users file is re-read at every login, so `bulwarkctl console user ...` applies at once; an
//! address with `login_failures` failures in `login_window` is refused without a password
//! check until the window has passed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bulwark::admin::users::{self, Role, User};
use bulwark::config::ConsoleConfig;

/// What a request wants to do; each role allows a set of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    Queue,
    Quarantine,
    Flow,
    Config,
    /// Adding and removing nodes of the federation: admins only.
    Nodes,
}

pub fn allows(role: Role, permission: Permission) -> bool {
    match role {
        Role::Admin => true,
        Role::Operator => !matches!(permission, Permission::Config | Permission::Nodes),
        Role::Auditor => permission == Permission::Read,
        Role::Quarantine => permission == Permission::Quarantine,
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub domains: Vec<String>,
    pub csrf: String,
    created: Instant,
    last_used: Instant,
}

#[derive(Debug, PartialEq, Eq)]
pub enum LoginRefusal {
    /// Too many failures from this address: not even checked.
    RateLimited,
    BadCredentials,
    /// The password was right; a TOTP code is needed (and was missing or wrong).
    TotpRequired,
}

pub struct Auth {
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // SystemRandom only fails where the OS has no randomness at all; then no token is better
    // than a guessable one, and an all-zero token is never issued twice (see `login`).
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Auth {
    pub fn new() -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Failures from `address` still inside the window (expired ones dropped).
    fn recent_failures(&self, config: &ConsoleConfig, address: IpAddr) -> usize {
        let mut failures = lock(&self.failures);
        let list = failures.entry(address).or_default();
        list.retain(|at| at.elapsed() < config.login_window);
        list.len()
    }

    /// Records a failure; true when this one reached the limit (time to block the address).
    pub fn record_failure(&self, config: &ConsoleConfig, address: IpAddr) -> bool {
        let mut failures = lock(&self.failures);
        let list = failures.entry(address).or_default();
        list.push(Instant::now());
        list.len() == config.login_failures as usize
    }

    pub fn login(
        &self,
        config: &ConsoleConfig,
        address: IpAddr,
        name: &str,
        password: &str,
        totp: Option<&str>,
    ) -> Result<(String, Session), LoginRefusal> {
        if self.recent_failures(config, address) >= config.login_failures as usize {
            return Err(LoginRefusal::RateLimited);
        }
        let list = users::load(&config.users_file).unwrap_or_else(|e| {
            log::error!("console users file: {e}");
            Vec::new()
        });
        let user = list
            .into_iter()
            .find(|u| u.name == name)
            .ok_or(LoginRefusal::BadCredentials)?;
        if !users::verify_password(&user, password) {
            return Err(LoginRefusal::BadCredentials);
        }
        check_second_factor(config, &user, totp)?;
        let token = random_token();
        let now = Instant::now();
        let session = Session {
            user: user.name,
            role: user.role,
            domains: user.domains,
            csrf: random_token(),
            created: now,
            last_used: now,
        };
        lock(&self.sessions).insert(token.clone(), session.clone());
        Ok((token, session))
    }

    /// The live session behind `token`, its idle clock restarted; expired ones are removed.
    pub fn session(&self, config: &ConsoleConfig, token: &str) -> Option<Session> {
        let mut sessions = lock(&self.sessions);
        let live = sessions.get(token).is_some_and(|s| {
            s.last_used.elapsed() < config.session_idle
                && s.created.elapsed() < config.session_lifetime
        });
        if !live {
            sessions.remove(token);
            return None;
        }
        let session = sessions.get_mut(token)?;
        session.last_used = Instant::now();
        Some(session.clone())
    }

    pub fn logout(&self, token: &str) {
        lock(&self.sessions).remove(token);
    }
}

fn check_second_factor(
    config: &ConsoleConfig,
    user: &User,
    code: Option<&str>,
) -> Result<(), LoginRefusal> {
    match (&user.totp, code) {
        (Some(secret), Some(code)) if users::verify_totp(secret, code, unix_now()) => Ok(()),
        (Some(_), _) => Err(LoginRefusal::TotpRequired),
        (None, _) if user.role == Role::Admin && config.require_totp_for_admins => {
            Err(LoginRefusal::TotpRequired)
        }
        (None, _) => Ok(()),
    }
}

/// Duration helper for callers that sleep after a failure (slows guessing).
pub const FAILURE_DELAY: Duration = Duration::from_millis(500);
