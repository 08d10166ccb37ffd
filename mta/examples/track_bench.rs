//! Message tracking benchmark: fills a store with a realistic mix of events (default
//! 1,000,000 for about 250,000 messages over 14 days), then times the queries
//! `bulwarkctl track` makes (by queue id, Message-ID, sender, recipient, since) and the
//! insert throughput of the writer. Prints a Markdown section for bench/RESULTS.md.
//!
//! `cargo run --example track_bench -- [--events N] [--dir DIR]`
//! (`--dir` keeps the store; by default it lives in a temporary directory.)

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bulwark::queue::QueueId;
use bulwark::track::{now_ms, Event, EventKind, Query, Store, Tracker};

const DAY_MS: i64 = 24 * 3600 * 1000;
const SENDERS: u64 = 5_000;
const RECIPIENTS: u64 = 20_000;
/// The writer's batch size (as `track::writer` uses it).
const BATCH: usize = 4096;

/// CPU seconds a thread has used, from /proc (`stat` fields 14 and 15, at USER_HZ = 100):
/// on a shared machine CPU time, not wall time, says what the writer costs.
fn cpu_seconds(stat: &std::path::Path) -> f64 {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    let after_name = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

/// The newest writer thread's `stat` file (named `track-writer`; it names itself once it runs).
fn writer_stat() -> Option<PathBuf> {
    for _ in 0..100 {
        let tasks = std::fs::read_dir("/proc/self/task").ok()?;
        let newest = tasks
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "track-writer")
            })
            .max_by_key(|t| t.file_name().to_string_lossy().parse::<u64>().unwrap_or(0));
        if let Some(task) = newest {
            return Some(task.path().join("stat"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// xorshift64*: reproducible without a dependency.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One message's life: 4 events usually, more when deferred first or bounced.
struct Mix {
    random: Random,
    start_ms: i64,
    step_ms: i64,
}

fn sender(n: u64) -> String {
    // One sender sends a tenth of all mail (a newsletter), the rest are spread out.
    if n == 0 {
        "newsletter@bank.example".into()
    } else {
        format!("user{n}@sender{}.example", n % 97)
    }
}

fn recipient(n: u64) -> String {
    format!("person{n}@example.com")
}

fn queue_id(message: u64) -> QueueId {
    QueueId(0x0006_0000_0000_0000 + message)
}

fn message_id(message: u64) -> String {
    format!(
        "<{message}.{:x}@client.example>",
        message.wrapping_mul(2_654_435_761)
    )
}

impl Mix {
    fn message(&mut self, message: u64, out: &mut Vec<Event>) {
        let id = queue_id(message);
        let mid = message_id(message);
        let at = self.start_ms + message as i64 * self.step_ms;
        let from = if self.random.below(10) == 0 {
            0
        } else {
            1 + self.random.below(SENDERS - 1)
        };
        let count = 1 + (self.random.below(4) == 0) as u64;
        let rcpts: Vec<String> = (0..count)
            .map(|_| recipient(self.random.below(RECIPIENTS)))
            .collect();
        let received = EventKind::Received {
            client: "192.0.2.10".into(),
            helo: "mail.sender.example".into(),
            tls: Some("TLSv1.3 TLS13_AES_256_GCM_SHA384".into()),
            auth_user: None,
            size: 2000 + self.random.below(50_000),
        };
        let event = |kind, offset: i64| Event::new(id, Some(&mid), kind).at(at + offset);
        out.push(event(received, 0).with_envelope(&sender(from), rcpts.iter().map(String::as_str)));
        out.push(event(
            EventKind::Queued {
                recipients: rcpts.len(),
            },
            1,
        ));
        let roll = self.random.below(100);
        for (i, rcpt) in rcpts.iter().enumerate() {
            let offset = 20 + i as i64;
            if roll < 8 {
                out.push(event(attempt(rcpt, "451 4.3.0 try again later"), offset));
                out.push(event(
                    EventKind::Deferred {
                        recipient: rcpt.clone(),
                        reason: "451 4.3.0 try again later".into(),
                        retry_in_seconds: 300,
                    },
                    offset,
                ));
            }
            if roll < 2 {
                out.push(event(
                    attempt(rcpt, "550 5.1.1 no such user"),
                    offset + 300_000,
                ));
                out.push(event(
                    EventKind::Bounced {
                        recipient: rcpt.clone(),
                        dsn_status: "5.1.1".into(),
                        reason: "550 5.1.1 no such user".into(),
                    },
                    offset + 300_000,
                ));
                continue;
            }
            let later = if roll < 8 { 300_000 } else { 0 };
            out.push(event(attempt(rcpt, "250 2.0.0 Ok"), offset + later));
            out.push(event(
                EventKind::Delivered {
                    recipient: rcpt.clone(),
                    relay: Some("groupware.example.com[10.0.0.5]:25".into()),
                    dsn_status: "2.0.0".into(),
                },
                offset + later,
            ));
        }
    }
}

fn attempt(rcpt: &str, reply: &str) -> EventKind {
    EventKind::Attempt {
        recipient: rcpt.into(),
        relay: Some("groupware.example.com[10.0.0.5]:25".into()),
        reply: reply.into(),
        dsn_status: reply.split(' ').nth(1).unwrap_or("").into(),
    }
}

/// Fills `store` through `Store::insert` in writer-sized batches; returns (events, messages,
/// wall seconds spent inserting, CPU seconds of this thread in total).
fn fill(store: &mut Store, target: usize) -> (usize, u64, f64, f64) {
    let cpu_before = cpu_seconds(std::path::Path::new("/proc/thread-self/stat"));
    // The mix below averages about 4.7 events per message.
    let messages_guess = (target as i64 * 10) / 47;
    let mut mix = Mix {
        random: Random(0x9E37_79B9_7F4A_7C15),
        start_ms: now_ms() - 14 * DAY_MS,
        step_ms: (14 * DAY_MS / messages_guess.max(1)).max(1),
    };
    let mut events = Vec::with_capacity(BATCH + 16);
    let (mut total, mut message, mut spent) = (0usize, 0u64, Duration::ZERO);
    while total < target {
        while events.len() < BATCH && total + events.len() < target {
            mix.message(message, &mut events);
            message += 1;
        }
        let started = Instant::now();
        store.insert(&events).expect("insert");
        spent += started.elapsed();
        total += events.len();
        events.clear();
    }
    let cpu = cpu_seconds(std::path::Path::new("/proc/thread-self/stat")) - cpu_before;
    (total, message, spent.as_secs_f64(), cpu)
}

/// Times one query; returns (ms, events in the answer).
fn time_query(tracker: &Tracker, query: &Query) -> (f64, usize) {
    let started = Instant::now();
    let timeline = tracker.timeline(query).expect("query");
    (
        started.elapsed().as_secs_f64() * 1000.0,
        timeline.events.len(),
    )
}

fn summary(name: &str, samples: Vec<(f64, usize)>) -> String {
    let mut times: Vec<f64> = samples.iter().map(|s| s.0).collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    let events: usize = samples.iter().map(|s| s.1).sum::<usize>() / samples.len();
    format!(
        "| {name} | {} | {median:.1} | {max:.1} | {events} |",
        samples.len()
    )
}

fn queries(tracker: &Tracker, messages: u64) -> Vec<String> {
    let mut random = Random(42);
    let mut pick = |n: u64| random.below(n);
    let mut rows = Vec::new();
    let by = |make: &mut dyn FnMut() -> Query| -> Vec<(f64, usize)> {
        (0..20).map(|_| time_query(tracker, &make())).collect()
    };
    let ids: Vec<u64> = (0..20).map(|_| pick(messages)).collect();
    let mut i = ids.iter();
    rows.push(summary(
        "--id",
        by(&mut || Query {
            id: Some(queue_id(*i.next().unwrap_or(&0)).to_string()),
            ..Default::default()
        }),
    ));
    let mut i = ids.iter();
    rows.push(summary(
        "--message-id (no brackets)",
        by(&mut || Query {
            message_id: Some(
                message_id(*i.next().unwrap_or(&0))
                    .trim_matches(['<', '>'])
                    .into(),
            ),
            ..Default::default()
        }),
    ));
    let senders: Vec<u64> = (0..20).map(|_| 1 + pick(SENDERS - 1)).collect();
    let mut i = senders.iter();
    rows.push(summary(
        "--sender (typical: ~50 messages)",
        by(&mut || Query {
            sender: Some(sender(*i.next().unwrap_or(&1))),
            ..Default::default()
        }),
    ));
    rows.push(summary(
        "--sender (a tenth of all mail; capped at 10,000 events)",
        by(&mut || Query {
            sender: Some(sender(0)),
            ..Default::default()
        }),
    ));
    let recipients: Vec<u64> = (0..20).map(|_| pick(RECIPIENTS)).collect();
    let mut i = recipients.iter();
    rows.push(summary(
        "--recipient",
        by(&mut || Query {
            recipient: Some(recipient(*i.next().unwrap_or(&0))),
            ..Default::default()
        }),
    ));
    rows.push(summary(
        "--since 2h",
        by(&mut || Query {
            since_seconds: Some(7200),
            ..Default::default()
        }),
    ));
    let mut i = senders.iter();
    rows.push(summary(
        "--sender --since 1d",
        by(&mut || Query {
            sender: Some(sender(*i.next().unwrap_or(&1))),
            since_seconds: Some(86_400),
            ..Default::default()
        }),
    ));
    rows
}

/// The real hot path: `Tracker::record` from one producer as fast as it can, the writer
/// thread behind it. Returns (ns per record call, events/s written, events per writer CPU
/// second, dropped).
fn record_burst(dir: &std::path::Path, events: usize) -> (f64, f64, f64, u64) {
    let tracker =
        Tracker::open_with(dir, Duration::from_secs(14 * 86_400), 65_536).expect("open tracker");
    let stat = writer_stat().expect("the writer thread");
    let cpu_before = cpu_seconds(&stat);
    let mut mix = Mix {
        random: Random(7),
        start_ms: now_ms(),
        step_ms: 1,
    };
    let mut pending = Vec::new();
    let mut message = 10_000_000u64;
    let mut call_time = Duration::ZERO;
    let started = Instant::now();
    let mut sent = 0;
    while sent < events {
        mix.message(message, &mut pending);
        message += 1;
        for event in pending.drain(..) {
            let t = Instant::now();
            tracker.record(event);
            call_time += t.elapsed();
            sent += 1;
        }
        // Paced at what the writer takes, so the burst measures throughput, not drops.
        while tracker.status().recorded - tracker.status().written - tracker.status().dropped
            > 60_000
        {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    tracker.flush(Duration::from_secs(60));
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(&stat) - cpu_before;
    let status = tracker.status();
    (
        call_time.as_nanos() as f64 / sent as f64,
        status.written as f64 / seconds,
        status.written as f64 / cpu.max(0.01),
        status.dropped,
    )
}

fn main() {
    let mut events = 1_000_000usize;
    let mut dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--events" => events = args.next().and_then(|n| n.parse().ok()).unwrap_or(events),
            "--dir" => dir = args.next().map(PathBuf::from),
            other => {
                eprintln!("track_bench: unknown argument {other:?} (--events N, --dir DIR)");
                std::process::exit(2);
            }
        }
    }
    let temporary = std::env::temp_dir().join(format!("track-bench-{}", std::process::id()));
    let dir = dir.unwrap_or_else(|| temporary.clone());
    std::fs::create_dir_all(&dir).expect("bench directory");
    let mut store = Store::open_for_writing(&dir).expect("open store");
    println!("- Load average at start: {}", load_average());
    let (inserted, messages, seconds, cpu) = fill(&mut store, events);
    drop(store);
    let size = std::fs::metadata(dir.join(bulwark::track::DATABASE)).map_or(0, |m| m.len());
    println!(
        "- Filled {inserted} events ({messages} messages over 14 days) through Store::insert in \
         {BATCH}-event transactions: {seconds:.1} s wall = {:.0} events/s; {cpu:.1} s CPU \
         (event generation included) = {:.0} events per CPU second; database {:.0} MB",
        inserted as f64 / seconds,
        inserted as f64 / cpu.max(0.01),
        size as f64 / 1e6
    );
    let tracker =
        Tracker::open_with(&dir, Duration::from_secs(15 * 86_400), 65_536).expect("open tracker");
    println!("\n| query | runs | median ms | max ms | events returned (mean) |");
    println!("| --- | --- | --- | --- | --- |");
    for row in queries(&tracker, messages) {
        println!("{row}");
    }
    drop(tracker);
    let burst_dir = dir.join("burst");
    let (ns, rate, per_cpu, dropped) = record_burst(&burst_dir, 400_000);
    println!(
        "\n- Tracker::record (channel to the writer thread), 400,000 events from one producer \
         into a new store: {ns:.0} ns per call; {rate:.0} events/s written (wall), \
         {per_cpu:.0} events per writer CPU second; {dropped} dropped"
    );
    println!("- Load average at end: {}", load_average());
    if dir == temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
