//! The stages of the pipeline, built from the configuration, in the order they run: content
//! scanners first (anti-virus, milters, anti-spam) so that the rules, last, can act on what
//! they found (`virus`, `spam_score_over`).

use std::sync::Arc;

use crate::config::Config;
use crate::filters::ratelimit::{LedgerSlot, OutboundLimit};
use crate::rules::{CompileError, RuleSet};

use super::{Pipeline, Stage};

#[derive(Debug, thiserror::Error)]
pub enum StagesError {
    #[error("rule[{index}].{}: {}", .error.field, .error.message)]
    Rule { index: usize, error: CompileError },
}

/// Builds the pipeline for `config`; `ledgers` keeps the outbound counters across reloads.
pub fn from_config(config: &Config, ledgers: &LedgerSlot) -> Result<Pipeline, StagesError> {
    let mut stages: Vec<Arc<dyn Stage>> = Vec::new();
    // First: a message over its sender's limit is not worth scanning.
    if let Some(limit) = &config.outbound_limit {
        let path = limit.state_file.clone().unwrap_or_else(|| {
            let spool = &config.server.spool_dir;
            spool.parent().unwrap_or(spool).join("outbound-limits.json")
        });
        stages.push(Arc::new(OutboundLimit::new(
            limit.clone(),
            ledgers.get(&path),
        )));
    }
    // Anti-virus, milters and anti-spam stages are added here, before the rules.
    for milter in &config.milters {
        stages.push(Arc::new(crate::filters::milter::MilterStage::new(
            milter.clone(),
            config.limits.max_message_size,
        )));
    }
    let rules = RuleSet::compile(&config.rules, config.pipeline.stage_timeout)
        .map_err(|(index, error)| StagesError::Rule { index, error })?;
    if !rules.is_empty() {
        stages.push(Arc::new(rules));
    }
    Ok(Pipeline::new(stages, config.pipeline.time_budget))
}
