//! The stages of the pipeline, built from the configuration, in the order they run: content
//! scanners first (anti-virus, milters, anti-spam) so that the rules, last, can act on what
//! they found (`virus`, `spam_score_over`).

use std::sync::Arc;

use crate::config::Config;
use crate::filters::antispam::{AntispamStage, SpamSetupError};
use crate::filters::antivirus::{stage::AntivirusStage, Antivirus};
use crate::filters::ratelimit::{LedgerSlot, OutboundLimit};
use crate::route::{HickoryResolver, ResolverSetupError};
use crate::rules::{CompileError, RuleSet};

use super::{Pipeline, Stage};

#[derive(Debug, thiserror::Error)]
pub enum StagesError {
    #[error("rule[{index}].{}: {}", .error.field, .error.message)]
    Rule { index: usize, error: CompileError },
    #[error(transparent)]
    Antispam(#[from] SpamSetupError),
    #[error(transparent)]
    Resolver(#[from] ResolverSetupError),
}

/// Builds the pipeline for `config`; `ledgers` keeps the outbound counters across reloads.
pub fn from_config(
    config: &Config,
    antivirus: Option<Arc<Antivirus>>,
    ledgers: &LedgerSlot,
) -> Result<Pipeline, StagesError> {
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
    let mut rules = RuleSet::compile(&config.rules, config.pipeline.stage_timeout)
        .map_err(|(index, error)| StagesError::Rule { index, error })?;
    if let Some(antivirus) = antivirus {
        let stage = AntivirusStage::new(antivirus);
        // Rules that act on `virus = true` decide per recipient; the anti-virus action
        // applies to what they leave undecided.
        if rules.decides_viruses() {
            rules.set_virus_fallback(stage.fallback());
            stages.push(Arc::new(stage.deferring_to_rules()));
        } else {
            stages.push(Arc::new(stage));
        }
    }
    for milter in &config.milters {
        stages.push(Arc::new(crate::filters::milter::MilterStage::new(
            milter.clone(),
            config.limits.max_message_size,
        )));
    }
    if let Some(spam) = config.antispam.as_ref().filter(|s| s.enabled) {
        let resolver = Arc::new(HickoryResolver::new(&config.dns)?);
        stages.push(Arc::new(AntispamStage::new(spam, &config.dns, resolver)?));
    }
    if !rules.is_empty() {
        stages.push(Arc::new(rules));
    }
    Ok(Pipeline::new(stages, config.pipeline.time_budget))
}
