//! The console's clock for mail: the daily report (and the weekly one, on Mondays) at
//! `[console.reports] hour`, the quarantine digests at `[console.digest] hour`, in UTC.
//!
//! Contract: each job runs at most once per UTC day (or week), the first time the console is
//! up at or after its hour; what ran is marked in `schedule.json` in the state directory
//! before the mail is sent, so a restart does not send it twice (a failed send is in the log
//! and the next day's run goes on).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::app::{unix_now, unix_now_ms, State};
use crate::reports::{self, Period};

/// How often the clock is looked at.
const TICK: Duration = Duration::from_secs(30);

/// The day number (since 1970-01-01) and hour of `now`, UTC.
fn day_and_hour(now: u64) -> (u64, u8) {
    (now / 86_400, ((now % 86_400) / 3600) as u8)
}

/// 1970-01-01 was a Thursday: day 4 after a Monday.
fn is_monday(day: u64) -> bool {
    (day + 3).is_multiple_of(7)
}

/// The jobs due at `now` that have not run today: (job name, its mark).
pub fn due(
    now: u64,
    marks: &BTreeMap<String, u64>,
    jobs: &[(&'static str, u8, bool)],
) -> Vec<&'static str> {
    let (day, hour) = day_and_hour(now);
    jobs.iter()
        .filter(|(_, at, weekly)| hour >= *at && (!weekly || is_monday(day)))
        .filter(|(name, ..)| marks.get(*name).is_none_or(|done| *done < day))
        .map(|(name, ..)| *name)
        .collect()
}

fn marks_path(state: &State) -> PathBuf {
    state.config.state_dir().join("schedule.json")
}

fn load_marks(state: &State) -> BTreeMap<String, u64> {
    std::fs::read(marks_path(state))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn save_marks(state: &State, marks: &BTreeMap<String, u64>) {
    let path = marks_path(state);
    let written = std::fs::create_dir_all(state.config.state_dir())
        .and_then(|()| std::fs::write(&path, serde_json::to_vec(marks).unwrap_or_default()));
    if let Err(e) = written {
        log::error!(path:% = path.display(); "schedule marks not saved: {e}");
    }
}

pub fn spawn(state: State) {
    let mut jobs = Vec::new();
    if let Some(r) = &state.config.reports {
        if !r.mail_to.is_empty() {
            if r.daily {
                jobs.push(("daily-report", r.hour, false));
            }
            if r.weekly {
                jobs.push(("weekly-report", r.hour, true));
            }
        }
    }
    if let Some(d) = &state.config.digest {
        jobs.push(("digest", d.hour, false));
    }
    if jobs.is_empty() {
        return;
    }
    tokio::spawn(async move {
        loop {
            let now = unix_now();
            let mut marks = load_marks(&state);
            let due = due(now, &marks, &jobs);
            for job in &due {
                marks.insert(job.to_string(), day_and_hour(now).0);
            }
            if !due.is_empty() {
                save_marks(&state, &marks);
            }
            for job in due {
                run(&state, job).await;
            }
            tokio::time::sleep(TICK).await;
        }
    });
}

async fn run(state: &State, job: &str) {
    let period = match job {
        "digest" => {
            let sent = crate::digest::send_all(state).await;
            log::info!(recipients = sent.len(); "scheduled quarantine digests sent");
            return;
        }
        "weekly-report" => Period::Weekly,
        _ => Period::Daily,
    };
    let Some(config) = &state.config.reports else {
        return;
    };
    let report = reports::make(state, period, unix_now_ms(), config.top).await;
    match reports::mail(state, &report, &config.mail_to).await {
        Ok(id) => log::info!(job = job, queue_id = id.as_str(); "scheduled report mailed"),
        Err(e) => log::error!(job = job; "scheduled report not mailed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_once_a_day_after_their_hour_and_weekly_ones_on_mondays() {
        let jobs = [("daily", 6, false), ("weekly", 6, true)];
        let monday = 4 * 86_400; // 1970-01-05
        assert!(is_monday(monday / 86_400));
        let mut marks = BTreeMap::new();
        assert!(
            due(monday + 5 * 3600, &marks, &jobs).is_empty(),
            "before the hour"
        );
        assert_eq!(due(monday + 6 * 3600, &marks, &jobs), ["daily", "weekly"]);
        marks.insert("daily".to_string(), monday / 86_400);
        marks.insert("weekly".to_string(), monday / 86_400);
        assert!(
            due(monday + 23 * 3600, &marks, &jobs).is_empty(),
            "once a day"
        );
        assert_eq!(
            due(monday + 86_400 + 7 * 3600, &marks, &jobs),
            ["daily"],
            "tuesday: daily only"
        );
    }
}
