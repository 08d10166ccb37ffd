//! The anti-virus stage of the content pipeline.
//!
//! # Contract
//! - clamd is streamed the raw message from the spool ([`ContentReader`], 64 KiB pieces); the
//!   built-in engine gets it in memory, which `max_scan_size` bounds (a larger message is not
//!   scanned: it goes on marked `X-Bulwark-Unscanned`, and the event is logged).
//! - A detection answers the configured `action`: reject (554 5.7.1 with the virus name),
//!   quarantine or discard, and publishes the name in the findings (`virus`) for the rules.
//! - A scan that cannot finish is a [`StageError`]: the pipeline applies `on_error`
//!   (tempfail: 451 4.7.1, nothing committed; accept: marked unscanned) and logs it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::clamd::ChunkSource;
use super::{Antivirus, Outcome, ScanInput};
use crate::config::{AvAction, DirectionScope, OnError};
use crate::pipeline::{
    Answer, ContentReader, Context, Decision, Findings, MessageContent, Modification, Stage,
    StageError, Verdict,
};
use crate::smtp::reply::Reply;

pub const STAGE_NAME: &str = "antivirus";

pub struct AntivirusStage {
    antivirus: Arc<Antivirus>,
    /// Rules act on `virus = true`: publish the finding and let them decide.
    defer_to_rules: bool,
}

impl AntivirusStage {
    pub fn new(antivirus: Arc<Antivirus>) -> Self {
        Self {
            antivirus,
            defer_to_rules: false,
        }
    }

    /// A detection answers `Continue` with the finding; the rule table (which then applies
    /// [`AntivirusStage::fallback`] to what no rule decided) has the last word.
    pub fn deferring_to_rules(mut self) -> Self {
        self.defer_to_rules = true;
        self
    }

    /// The configured action as a verdict, for the rule table's undecided detections.
    pub fn fallback(&self) -> crate::rules::VirusFallback {
        let action = self.antivirus.config.action;
        Arc::new(move |name: &str| action_verdict(action, name))
    }

    fn infected(&self, name: String) -> Decision {
        let verdict = if self.defer_to_rules {
            Verdict::Continue
        } else {
            action_verdict(self.antivirus.config.action, &name)
        };
        Decision {
            verdict,
            reason: Some(format!("virus {name}")),
            findings: Findings {
                virus: Some(name),
                ..Findings::default()
            },
            ..Decision::default()
        }
    }
}

fn action_verdict(action: AvAction, name: &str) -> Verdict {
    match action {
        AvAction::Reject => Verdict::Reject(Reply::owned(
            554,
            format!("5.7.1 Message refused: virus found ({})", reply_safe(name)),
        )),
        AvAction::Quarantine => Verdict::Quarantine,
        AvAction::Discard => Verdict::Discard,
    }
}

/// A virus name as clamd or a signature file wrote it, fit for one SMTP reply line.
fn reply_safe(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(200)
        .collect()
}

#[async_trait]
impl Stage for AntivirusStage {
    fn name(&self) -> &str {
        STAGE_NAME
    }

    fn scope(&self) -> DirectionScope {
        self.antivirus.config.direction
    }

    fn timeout(&self) -> Duration {
        // clamd's own timeout fires first and says why; this is the pipeline's backstop.
        self.antivirus.config.timeout + Duration::from_secs(5)
    }

    fn on_error(&self) -> OnError {
        self.antivirus.config.on_error
    }

    async fn check(&self, cx: &Context<'_>) -> Result<Answer, StageError> {
        let input = SpoolInput {
            content: cx.content,
            limit: self.antivirus.config.max_scan_size,
        };
        let outcome = self
            .antivirus
            .scan(&input)
            .await
            .map_err(|e| StageError::new(STAGE_NAME, e.to_string()))?;
        let decision = match outcome {
            Outcome::Clean => Decision::default(),
            Outcome::Infected { engine, name } => {
                log::info!(queue_id:% = cx.queue_id, engine:? = engine, virus:% = name;
                    "antivirus: virus found");
                self.infected(name)
            }
            Outcome::TooLarge => {
                log::info!(queue_id:% = cx.queue_id, size = cx.content.len(),
                    max_scan_size = self.antivirus.config.max_scan_size;
                    "antivirus: message over max_scan_size, not scanned");
                Decision {
                    modifications: vec![Modification::AddHeader {
                        name: "X-Bulwark-Unscanned".into(),
                        value: format!("{STAGE_NAME} (larger than max_scan_size)"),
                    }],
                    ..Decision::default()
                }
            }
        };
        Ok(Answer::One(decision))
    }
}

/// The message in the spool as the engines read it.
struct SpoolInput<'c, 'a> {
    content: &'c MessageContent<'a>,
    limit: u64,
}

#[async_trait]
impl ScanInput for SpoolInput<'_, '_> {
    fn len(&self) -> u64 {
        self.content.len()
    }

    fn reader(&self) -> Box<dyn ChunkSource + '_> {
        Box::new(SpoolReader(self.content.reader()))
    }

    async fn bytes(&self) -> Result<Arc<[u8]>, String> {
        match self.content.bytes(self.limit).await {
            Ok(Some(bytes)) => Ok(bytes),
            // [pipeline] max_parse_size is below max_scan_size.
            Ok(None) => Err("the message is larger than [pipeline] max_parse_size".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

struct SpoolReader(ContentReader);

#[async_trait]
impl ChunkSource for SpoolReader {
    async fn next_chunk(&mut self, max: usize) -> Result<Option<Vec<u8>>, String> {
        self.0.next(max).await.map_err(|e| e.to_string())
    }
}
