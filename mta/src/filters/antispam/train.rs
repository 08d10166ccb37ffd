//! Building a model from directories of spam and ham (`bulwarkctl spam train`), with the
//! measurement that chose the classifier: logistic regression and naive Bayes are trained on
//! the same nine tenths and compared on the remaining tenth (files whose name hashes to 0
//! mod 10), then the model is trained on everything it was given.

use std::path::{Path, PathBuf};

use super::features::{self, hash};
use super::model::{train_logistic, Example, Model, NaiveBayes, TrainOptions};
use super::scan::{split_raw, CLASSIFIER_WEIGHT};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no message could be parsed")]
    Empty(PathBuf),
}

/// One message's features with its label and file name.
pub struct Labelled {
    pub name: String,
    pub features: features::Features,
    pub spam: bool,
}

/// Reads every file of `dir` (sorted by name, so training is reproducible).
pub fn read_dir(dir: &Path, spam: bool) -> Result<Vec<Labelled>, TrainError> {
    let read = |source| TrainError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let raw = std::fs::read(&path).map_err(|source| TrainError::Read {
            path: path.clone(),
            source,
        })?;
        if let Some(features) = features_of(&raw) {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push(Labelled {
                name,
                features,
                spam,
            });
        }
    }
    if out.is_empty() {
        return Err(TrainError::Empty(dir.to_path_buf()));
    }
    Ok(out)
}

/// The features of a raw message as stored (mbox `From ` line allowed).
pub fn features_of(raw: &[u8]) -> Option<features::Features> {
    let (header, message) = split_raw(raw);
    let parsed = mail_parser::MessageParser::default().parse(message)?;
    Some(features::extract(&parsed, header))
}

/// Spam caught and ham flagged on the validation tenth, at the default tag score.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rates {
    pub spam: usize,
    pub ham: usize,
    pub spam_caught: usize,
    pub ham_flagged: usize,
}

impl Rates {
    pub fn caught_percent(&self) -> f64 {
        100.0 * self.spam_caught as f64 / self.spam.max(1) as f64
    }
    pub fn flagged_percent(&self) -> f64 {
        100.0 * self.ham_flagged as f64 / self.ham.max(1) as f64
    }
}

pub struct TrainReport {
    pub model: Model,
    pub spam: usize,
    pub ham: usize,
    /// At the log-odds that reaches `tag_score` (5.0) on the classifier alone.
    pub logistic: Rates,
    pub bayes: Rates,
    /// At each classifier's own threshold that flags at most 0.3 % of validation ham: the
    /// comparison at equal false positives, which is what chose the classifier.
    pub logistic_at_fp: Rates,
    pub bayes_at_fp: Rates,
}

fn in_validation(name: &str) -> bool {
    hash(9, name.as_bytes()).is_multiple_of(10)
}

/// Trains on `messages`; measures both classifiers on the validation tenth first.
pub fn train(messages: &[Labelled], options: TrainOptions) -> TrainReport {
    let empty = Model::empty(options.bits);
    let examples = |keep: &dyn Fn(&Labelled) -> bool| -> Vec<Example> {
        messages
            .iter()
            .filter(|m| keep(m))
            .map(|m| empty.example(&m.features, m.spam))
            .collect()
    };
    let fit = examples(&|m| !in_validation(&m.name));
    let check = examples(&|m| in_validation(&m.name));
    // The classifier's share alone must reach tag_score (5.0) to flag.
    let threshold = 5.0 / CLASSIFIER_WEIGHT;
    let logistic_model = train_logistic(&fit, options);
    let logistic = rates(&check, |e| logistic_model.logit(e), threshold);
    let bayes_model = NaiveBayes::train(&fit, options.bits);
    let bayes = rates(&check, |e| bayes_model.logit(e), threshold);
    let logistic_at_fp = rates_at_fp(&check, |e| logistic_model.logit(e), 0.003);
    let bayes_at_fp = rates_at_fp(&check, |e| bayes_model.logit(e), 0.003);
    let all = examples(&|_| true);
    TrainReport {
        model: train_logistic(&all, options),
        spam: all.iter().filter(|e| e.spam).count(),
        ham: all.iter().filter(|e| !e.spam).count(),
        logistic,
        bayes,
        logistic_at_fp,
        bayes_at_fp,
    }
}

/// The rates at the lowest threshold that flags at most `fp` of the ham.
fn rates_at_fp(examples: &[Example], logit: impl Fn(&Example) -> f64, fp: f64) -> Rates {
    let mut ham: Vec<f64> = examples.iter().filter(|e| !e.spam).map(&logit).collect();
    ham.sort_by(|a, b| b.total_cmp(a));
    let allowed = (ham.len() as f64 * fp).floor() as usize;
    let threshold = ham.get(allowed).map_or(f64::NEG_INFINITY, |t| t + 1e-9);
    rates(examples, logit, threshold)
}

fn rates(examples: &[Example], logit: impl Fn(&Example) -> f64, threshold: f64) -> Rates {
    let mut r = Rates::default();
    for e in examples {
        let flagged = logit(e) >= threshold;
        if e.spam {
            r.spam += 1;
            r.spam_caught += usize::from(flagged);
        } else {
            r.ham += 1;
            r.ham_flagged += usize::from(flagged);
        }
    }
    r
}
