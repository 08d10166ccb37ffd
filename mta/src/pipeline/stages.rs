//! The stages of the pipeline, built from the configuration, in the order they run: content
//! scanners first (anti-virus, milters, anti-spam) so that the rules, last, can act on what
//! they found (`virus`, `spam_score_over`).

use std::sync::Arc;

use crate::config::Config;
use crate::filters::antispam::{AntispamStage, SpamSetupError};
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

/// Builds the pipeline for `config`.
pub fn from_config(config: &Config) -> Result<Pipeline, StagesError> {
    let mut stages: Vec<Arc<dyn Stage>> = Vec::new();
    // Anti-virus and milter stages are added here too, before the rules.
    if let Some(spam) = config.antispam.as_ref().filter(|s| s.enabled) {
        let resolver = Arc::new(HickoryResolver::new(&config.dns)?);
        stages.push(Arc::new(AntispamStage::new(spam, &config.dns, resolver)?));
    }
    let rules = RuleSet::compile(&config.rules, config.pipeline.stage_timeout)
        .map_err(|(index, error)| StagesError::Rule { index, error })?;
    if !rules.is_empty() {
        stages.push(Arc::new(rules));
    }
    Ok(Pipeline::new(stages, config.pipeline.time_budget))
}
