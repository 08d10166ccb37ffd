//! `bulwarkctl spam ...`: the anti-spam model's offline verbs (train, learn, check).

use std::path::{Path, PathBuf};
use std::time::Instant;

use bulwark::config::AntispamConfig;
use bulwark::daemon::ConfigSource;
use bulwark::filters::antispam::learn::learn_message;
use bulwark::filters::antispam::model::{Model, TrainOptions};
use bulwark::filters::antispam::rules::SpamRules;
use bulwark::filters::antispam::scan::{scan_bytes, Scanner};
use bulwark::filters::antispam::train;
use serde_json::json;

use super::SpamCommand;

/// `[antispam]` of the configuration, when there is one to read.
fn configured(config: &Option<PathBuf>) -> Option<AntispamConfig> {
    ConfigSource::choose(config.clone()).load().ok()?.antispam
}

fn model_path(explicit: Option<PathBuf>, config: &Option<PathBuf>) -> Result<PathBuf, String> {
    explicit
        .or_else(|| configured(config)?.model)
        .ok_or_else(|| "no model file: give --model/--out or set [antispam] model".to_string())
}

pub fn run(command: SpamCommand, config: &Option<PathBuf>) -> Result<(), String> {
    match command {
        SpamCommand::Train {
            spam,
            ham,
            out,
            json,
            bits,
            epochs,
            l2,
            spam_weight,
        } => {
            let out = model_path(out, config)?;
            let defaults = TrainOptions::default();
            let options = TrainOptions {
                bits: bits.unwrap_or(defaults.bits),
                epochs: epochs.unwrap_or(defaults.epochs),
                l2: l2.unwrap_or(defaults.l2),
                spam_weight: spam_weight.unwrap_or(defaults.spam_weight),
                ..defaults
            };
            train_model(&spam, &ham, &out, json, options)
        }
        SpamCommand::Learn { spam, ham, model } => {
            let path = model_path(model, config)?;
            let (file, is_spam) = match (spam, ham) {
                (Some(file), _) => (file, true),
                (None, Some(file)) => (file, false),
                (None, None) => return Err("give --spam FILE or --ham FILE".into()),
            };
            let learned = learn_message(&path, &file, is_spam).map_err(|e| e.to_string())?;
            println!(
                "learned {} as {}: log-odds {:.2} -> {:.2} in {} steps; model {}",
                file.display(),
                if is_spam { "spam" } else { "ham" },
                learned.before,
                learned.after,
                learned.steps,
                path.display()
            );
            Ok(())
        }
        SpamCommand::Check {
            files,
            model,
            rules,
            json,
        } => check(files, model, rules, config, json),
    }
}

fn train_model(
    spam: &Path,
    ham: &Path,
    out: &Path,
    as_json: bool,
    options: TrainOptions,
) -> Result<(), String> {
    let mut messages = train::read_dir(spam, true).map_err(|e| e.to_string())?;
    messages.extend(train::read_dir(ham, false).map_err(|e| e.to_string())?);
    let report = train::train(&messages, options);
    report.model.save(out).map_err(|e| e.to_string())?;
    let rates = |r: &train::Rates| {
        json!({"spam": r.spam, "ham": r.ham, "spam_caught_percent": r.caught_percent(),
               "ham_flagged_percent": r.flagged_percent()})
    };
    if as_json {
        let value = json!({"model": out.display().to_string(), "spam": report.spam, "ham": report.ham,
            "validation": {"logistic": rates(&report.logistic), "bayes": rates(&report.bayes),
                "logistic_at_0.3pct_ham": rates(&report.logistic_at_fp),
                "bayes_at_0.3pct_ham": rates(&report.bayes_at_fp)}});
        println!("{value}");
    } else {
        println!(
            "trained on {} spam, {} ham -> {}",
            report.spam,
            report.ham,
            out.display()
        );
        let measured = [
            ("logistic regression, at tag_score", &report.logistic),
            ("naive Bayes, at tag_score", &report.bayes),
            ("logistic regression, at 0.3 % ham", &report.logistic_at_fp),
            ("naive Bayes, at 0.3 % ham", &report.bayes_at_fp),
        ];
        for (name, r) in measured {
            println!(
                "validation ({} spam, {} ham), {name}: spam caught {:.2} %, ham flagged {:.2} %",
                r.spam,
                r.ham,
                r.caught_percent(),
                r.flagged_percent()
            );
        }
    }
    Ok(())
}

fn check(
    files: Vec<PathBuf>,
    model: Option<PathBuf>,
    rules: Option<PathBuf>,
    config: &Option<PathBuf>,
    as_json: bool,
) -> Result<(), String> {
    let configured = configured(config);
    let model_file = model.or_else(|| configured.as_ref()?.model.clone());
    let model = match model_file {
        Some(path) => Model::load(&path).map_err(|e| e.to_string())?,
        None => Model::builtin().map_err(|e| e.to_string())?,
    };
    let rules = match rules.or_else(|| configured.as_ref()?.rules.clone()) {
        Some(path) => SpamRules::load(&path).map_err(|e| e.to_string())?,
        None => SpamRules::builtin().map_err(|e| e.to_string())?,
    };
    let scanner = Scanner { model, rules };
    let started = Instant::now();
    for file in &files {
        let raw = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let Some(scan) = scan_bytes(&scanner, &raw) else {
            println!("{}\tunparsable", file.display());
            continue;
        };
        if as_json {
            let symbols: Vec<_> = scan.symbols.iter().map(|(s, w)| json!([s, w])).collect();
            println!(
                "{}",
                json!({"file": file.display().to_string(), "score": scan.score(), "symbols": symbols})
            );
        } else {
            let names: Vec<&str> = scan.symbols.iter().map(|(s, _)| s.as_str()).collect();
            println!(
                "{}\t{:.1}\t{}",
                file.display(),
                scan.score(),
                names.join(",")
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("scored {} messages in {seconds:.3} s", files.len());
    Ok(())
}
