//! The statistical classifier: logistic regression over hashed features, its training and
//! online updates, and its file format.
//!
//! # Why logistic regression
//! `bulwarkctl spam train` measures both on a validation split of its input (a fixed tenth
//! of the messages, never trained on) and prints the figures: regularised logistic regression
//! (AdaGrad) over the same hashed tokens and structural flags, and multinomial naive Bayes as
//! the OSB-Bayes-style baseline. On the SpamAssassin corpus regression wins at the low false
//! positive rates we tag at (bench/RESULTS.md), and it learns *weights for the structural
//! flags* jointly with the words, where Bayes treats every token as independent evidence and
//! lets a thousand words drown a forged header. The figures are in bench/RESULTS.md.
//!
//! # File format (version 2), little endian
//! `b"BWSPAM"`, `u16` version = 2, `u8` bits (the model has `2^bits` weights), `u8` 0,
//! `f32` bias, `f32` scale, then `2^bits` `i16` weights (weight = i16 × scale), then the
//! CRC-32 of everything before it. 2^16 weights make a 128 KiB file.
//!
//! # Invariants
//! - A file that does not verify (magic, version, size, checksum) is refused as a whole; the
//!   daemon never scores with a half-read model.
//! - Training is deterministic: the same files in the same directories give the same bytes.

use std::path::Path;

use super::features::Features;

/// The model built into the binary: trained on 80 % of the SpamAssassin public corpus by
/// `scripts/spam-model.sh`; the other 20 % is what bench/spam_eval.py measures.
pub const DEFAULT_MODEL: &[u8] = include_bytes!("default.model");

const MAGIC: &[u8; 6] = b"BWSPAM";
/// Version 2: the features of `features.rs` v2 (words normalised by `tokens.rs`, header,
/// link and shape tokens, 33 flags). A version-1 file was trained on other features and
/// is refused (retrain with `bulwarkctl spam train`).
const VERSION: u16 = 2;
/// The default size: 2^16 buckets.
pub const DEFAULT_BITS: u8 = 16;
/// Logits are clamped so that one message's words cannot outweigh every other signal.
pub const MAX_LOGIT: f64 = 8.0;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("not a Bulwark spam model (bad magic)")]
    Magic,
    #[error("unsupported model version {0}")]
    Version(u16),
    #[error("model truncated or oversized: {0} bytes")]
    Size(usize),
    #[error("model checksum mismatch")]
    Checksum,
}

/// A trained model, weights as f32 in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    bits: u8,
    pub bias: f32,
    weights: Vec<f32>,
}

/// One labelled example: its features reduced to the model's buckets.
pub struct Example {
    pub buckets: Vec<(u32, f32)>,
    pub spam: bool,
}

impl Model {
    pub fn empty(bits: u8) -> Model {
        Model {
            bits,
            bias: 0.0,
            weights: vec![0.0; 1 << bits],
        }
    }

    pub fn builtin() -> Result<Model, ModelError> {
        Model::from_bytes(DEFAULT_MODEL)
    }

    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Model::from_bytes(&bytes)
    }

    /// Writes atomically (a temporary file renamed over `path`).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let write = |source| ModelError::Write {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_bytes()).map_err(write)?;
        std::fs::rename(&tmp, path).map_err(write)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Model, ModelError> {
        if bytes.len() < 22 || &bytes[..6] != MAGIC {
            return Err(ModelError::Magic);
        }
        let version = u16::from_le_bytes([bytes[6], bytes[7]]);
        if version != VERSION {
            return Err(ModelError::Version(version));
        }
        let bits = bytes[8];
        let count = 1usize << bits.min(24);
        if bits > 24 || bytes.len() != 18 + 2 * count + 4 {
            return Err(ModelError::Size(bytes.len()));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(ModelError::Checksum);
        }
        let f32_at = |at: usize| {
            f32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let (bias, scale) = (f32_at(10), f32_at(14));
        let weights = body[18..]
            .chunks_exact(2)
            .map(|w| f32::from(i16::from_le_bytes([w[0], w[1]])) * scale)
            .collect();
        Ok(Model {
            bits,
            bias,
            weights,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let largest = self.weights.iter().fold(0f32, |m, w| m.max(w.abs()));
        let scale = if largest > 0.0 {
            largest / 32767.0
        } else {
            1.0
        };
        let mut out = Vec::with_capacity(22 + 2 * self.weights.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(self.bits);
        out.push(0);
        out.extend_from_slice(&self.bias.to_le_bytes());
        out.extend_from_slice(&scale.to_le_bytes());
        for w in &self.weights {
            let q = (w / scale).round().clamp(-32767.0, 32767.0) as i16;
            out.extend_from_slice(&q.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn bucket(&self, token: u64) -> u32 {
        ((token ^ (token >> 29)) & ((1u64 << self.bits) - 1)) as u32
    }

    /// The features as (bucket, value): the text's tokens share a total weight of 1 (so
    /// long messages do not shout), the header, link and shape tokens another 1, and each
    /// structural flag counts 1.
    pub fn example(&self, features: &Features, spam: bool) -> Example {
        let share = |n: usize| 1.0 / (n.max(1) as f32).sqrt();
        let (word_value, meta_value) = (share(features.words.len()), share(features.meta.len()));
        let mut buckets =
            Vec::with_capacity(features.words.len() + features.meta.len() + features.flags.len());
        buckets.extend(features.words.iter().map(|&t| (self.bucket(t), word_value)));
        buckets.extend(features.meta.iter().map(|&t| (self.bucket(t), meta_value)));
        buckets.extend(
            features
                .flags
                .iter()
                .map(|&f| (self.bucket(super::features::flag_token(f)), 1.0)),
        );
        Example { buckets, spam }
    }

    /// The log-odds that the example is spam, clamped to ±[`MAX_LOGIT`].
    pub fn logit(&self, example: &Example) -> f64 {
        let sum: f32 = self.bias
            + example
                .buckets
                .iter()
                .map(|&(b, v)| self.weights[b as usize] * v)
                .sum::<f32>();
        f64::from(sum).clamp(-MAX_LOGIT, MAX_LOGIT)
    }

    /// The learned weight of one token (what a flag contributes).
    pub fn weight(&self, token: u64) -> f64 {
        f64::from(self.weights[self.bucket(token) as usize])
    }

    /// One online update (`spam learn`, a "not spam" release): gradient steps on this example
    /// until it is on the right side with a margin, at most `MAX_LEARN_STEPS`.
    pub fn learn(&mut self, example: &Example) -> usize {
        const MAX_LEARN_STEPS: usize = 200;
        const MARGIN: f64 = 4.0;
        for step in 0..MAX_LEARN_STEPS {
            let logit = self.logit(example);
            let done = if example.spam {
                logit >= MARGIN
            } else {
                logit <= -MARGIN
            };
            if done {
                return step;
            }
            self.step(example, 1.0);
        }
        MAX_LEARN_STEPS
    }

    fn step(&mut self, example: &Example, rate: f32) {
        let p = sigmoid(self.logit(example));
        let gradient = (if example.spam { 1.0 } else { 0.0 } - p) as f32;
        for &(b, v) in &example.buckets {
            self.weights[b as usize] += rate * gradient * v;
        }
        self.bias += rate * gradient * 0.1;
    }
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Training settings (the defaults are what the shipped model was built with).
#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    pub bits: u8,
    pub epochs: usize,
    pub rate: f32,
    pub l2: f32,
    /// How much a spam example's error counts against a ham example's (below 1: missing
    /// spam is cheaper than flagging ham).
    pub spam_weight: f32,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            bits: DEFAULT_BITS,
            epochs: 12,
            rate: 0.5,
            l2: 1e-6,
            spam_weight: 2.0,
        }
    }
}

/// Logistic regression with AdaGrad, examples in a fixed pseudo-random order per epoch.
pub fn train_logistic(examples: &[Example], options: TrainOptions) -> Model {
    let mut model = Model::empty(options.bits);
    let mut squared = vec![1e-6f32; model.weights.len()];
    let mut bias_squared = 1e-6f32;
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..options.epochs {
        shuffle(&mut order, &mut state);
        for &i in &order {
            let example = &examples[i];
            let p = sigmoid(model.logit(example));
            let gradient = if example.spam {
                (p - 1.0) as f32 * options.spam_weight
            } else {
                p as f32
            };
            for &(b, v) in &example.buckets {
                let b = b as usize;
                let g = gradient * v + options.l2 * model.weights[b];
                squared[b] += g * g;
                model.weights[b] -= options.rate * g / squared[b].sqrt();
            }
            bias_squared += gradient * gradient;
            model.bias -= options.rate * gradient / bias_squared.sqrt();
        }
    }
    model
}

fn shuffle(order: &mut [usize], state: &mut u64) {
    for i in (1..order.len()).rev() {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        order.swap(i, (*state % (i as u64 + 1)) as usize);
    }
}

/// Multinomial naive Bayes over the same buckets: the baseline training compares with.
pub struct NaiveBayes {
    log_odds: Vec<f32>,
    prior: f32,
}

impl NaiveBayes {
    pub fn train(examples: &[Example], bits: u8) -> NaiveBayes {
        let n = 1usize << bits;
        let (mut spam, mut ham) = (vec![1.0f64; n], vec![1.0f64; n]);
        let (mut spam_total, mut ham_total) = (n as f64, n as f64);
        let mut spam_count = 0usize;
        for example in examples {
            let (counts, total) = if example.spam {
                spam_count += 1;
                (&mut spam, &mut spam_total)
            } else {
                (&mut ham, &mut ham_total)
            };
            for &(b, _) in &example.buckets {
                counts[b as usize] += 1.0;
                *total += 1.0;
            }
        }
        let log_odds = (0..n)
            .map(|i| ((spam[i] / spam_total).ln() - (ham[i] / ham_total).ln()) as f32)
            .collect();
        let ham_count = examples.len() - spam_count;
        let prior = ((spam_count.max(1) as f64) / (ham_count.max(1) as f64)).ln() as f32;
        NaiveBayes { log_odds, prior }
    }

    pub fn logit(&self, example: &Example) -> f64 {
        let sum: f32 = example
            .buckets
            .iter()
            .map(|&(b, _)| self.log_odds[b as usize])
            .sum();
        f64::from(self.prior + sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(buckets: &[u32], spam: bool) -> Example {
        Example {
            buckets: buckets.iter().map(|&b| (b, 1.0)).collect(),
            spam,
        }
    }

    #[test]
    fn file_round_trip_and_checks() {
        let mut model = Model::empty(8);
        model.weights[3] = 1.5;
        model.weights[7] = -0.25;
        model.bias = 0.5;
        let bytes = model.to_bytes();
        assert_eq!(bytes.len(), 18 + 2 * 256 + 4);
        let back = Model::from_bytes(&bytes).expect("valid");
        assert!((back.weights[3] - 1.5).abs() < 1e-3 && (back.weights[7] + 0.25).abs() < 1e-3);
        let mut corrupt = bytes.clone();
        corrupt[30] ^= 1;
        assert!(matches!(
            Model::from_bytes(&corrupt),
            Err(ModelError::Checksum)
        ));
        assert!(matches!(
            Model::from_bytes(&bytes[..100]),
            Err(ModelError::Size(_))
        ));
        assert!(matches!(
            Model::from_bytes(b"not a model at all!!"),
            Err(ModelError::Magic)
        ));
    }

    #[test]
    fn regression_and_bayes_separate_a_toy_set() {
        let examples = vec![
            example(&[1, 2, 3], true),
            example(&[1, 2, 4], true),
            example(&[5, 6, 3], false),
            example(&[5, 6, 7], false),
        ];
        let options = TrainOptions {
            bits: 4,
            ..TrainOptions::default()
        };
        let model = train_logistic(&examples, options);
        let bayes = NaiveBayes::train(&examples, 4);
        assert!(model.logit(&example(&[1, 2], true)) > 0.5);
        assert!(model.logit(&example(&[5, 6], false)) < -0.5);
        assert!(bayes.logit(&example(&[1, 2], true)) > 0.0);
        assert!(bayes.logit(&example(&[5, 6], false)) < 0.0);
    }

    #[test]
    fn learning_moves_a_message_across() {
        let mut model = Model::empty(4);
        let spam = example(&[9, 10], true);
        assert!(model.logit(&spam) < 1.0);
        let steps = model.learn(&spam);
        assert!(steps > 0 && model.logit(&spam) >= 4.0);
    }

    #[test]
    fn builtin_model_loads() {
        Model::builtin().expect("the shipped model verifies");
    }
}
