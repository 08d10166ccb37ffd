//! YARA rules of a signature set: compiled with the set, evaluated on every decoded object.
//!
//! # Contract
//! - Every `*.yar` / `*.yara` file of a set is compiled together with the set, each file in its
//!   own namespace (so two vendors' files may reuse a rule name). One file that does not compile
//!   makes the whole set fail with `FILE:LINE:COLUMN: message`; the caller keeps its old set.
//! - A matching rule is reported as the virus name `YARA.<rule>`.
//! - A scan that cannot finish (a rule slower than [`SCAN_TIMEOUT`] on one object) is an error,
//!   never "clean": the engine reports it and the stage applies `on_error`.
//! - Built without the cargo feature `yara` (yara-x is a large dependency: see
//!   bench/RESULTS.md), rule files are counted as ignored and never evaluated, so
//!   `bulwarkctl av status` says they do nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// One object (attachment, archive member) may take at most this long under all rules.
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a rule file was refused.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct RuleError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Why an object could not be scanned.
#[derive(Debug, Clone, thiserror::Error)]
#[error("YARA scan: {0}")]
pub struct YaraScanError(String);

/// The virus name a matching rule is reported as.
pub fn virus_name(rule: &str) -> String {
    format!("YARA.{rule}")
}

/// Line and column (1-based, column in characters) of byte `offset` in `source`.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// A file's namespace: its name without the extension, in YARA identifier characters.
fn namespace(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("rules");
    stem.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(feature = "yara")]
mod engine {
    use super::*;

    /// The compiled rules of one set (none when the set has no rule file).
    #[derive(Default)]
    pub struct YaraRules {
        rules: Option<yara_x::Rules>,
        files: usize,
    }

    impl std::fmt::Debug for YaraRules {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "YaraRules({} rules)", self.rule_count())
        }
    }

    impl YaraRules {
        /// Compiles `sources` (path, text) into one rule set.
        pub fn compile(sources: &[(PathBuf, String)]) -> Result<Self, RuleError> {
            if sources.is_empty() {
                return Ok(Self::default());
            }
            let mut compiler = yara_x::Compiler::new();
            for (path, text) in sources {
                compiler.new_namespace(&namespace(path));
                if let Err(error) = compiler.add_source(text.as_str()) {
                    return Err(rule_error(path, text, &error));
                }
            }
            Ok(Self {
                rules: Some(compiler.build()),
                files: sources.len(),
            })
        }

        pub fn rule_count(&self) -> usize {
            self.rules.as_ref().map_or(0, |r| r.iter().len())
        }

        pub fn files_compiled(&self) -> usize {
            self.files
        }

        pub fn files_ignored(&self) -> usize {
            0
        }

        /// A scanner for one message's objects (None: no rules to evaluate).
        pub fn scanner(&self) -> Option<YaraScanner<'_>> {
            let rules = self.rules.as_ref()?;
            let mut scanner = yara_x::Scanner::new(rules);
            scanner.set_timeout(SCAN_TIMEOUT);
            Some(YaraScanner(scanner))
        }
    }

    fn rule_error(path: &Path, text: &str, error: &yara_x::errors::CompileError) -> RuleError {
        let offset = error.labels().next().map_or(0, |l| l.span().start());
        let (line, column) = line_column(text, offset);
        let detail = error.labels().next().map(|l| l.text().to_string());
        let message = match detail {
            Some(detail) if !detail.is_empty() => format!("{}: {detail}", error.title()),
            _ => error.title().to_string(),
        };
        RuleError {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    }

    /// Evaluates the rules on objects one after another (one wasm instance per message).
    pub struct YaraScanner<'r>(yara_x::Scanner<'r>);

    impl YaraScanner<'_> {
        /// The first rule `object` matches, as its virus name.
        pub fn first_match(&mut self, object: &[u8]) -> Result<Option<String>, YaraScanError> {
            let results = self
                .0
                .scan(object)
                .map_err(|e| YaraScanError(e.to_string()))?;
            let name = results
                .matching_rules()
                .next()
                .map(|rule| virus_name(rule.identifier()));
            Ok(name)
        }
    }
}

#[cfg(not(feature = "yara"))]
mod engine {
    use super::*;

    /// Built without YARA: rule files are counted, never evaluated.
    #[derive(Debug, Default)]
    pub struct YaraRules {
        files: usize,
    }

    impl YaraRules {
        pub fn compile(sources: &[(PathBuf, String)]) -> Result<Self, RuleError> {
            Ok(Self {
                files: sources.len(),
            })
        }

        pub fn rule_count(&self) -> usize {
            0
        }

        pub fn files_compiled(&self) -> usize {
            0
        }

        pub fn files_ignored(&self) -> usize {
            self.files
        }

        pub fn scanner(&self) -> Option<YaraScanner<'_>> {
            None
        }
    }

    /// Never built: there are no rules to evaluate.
    pub struct YaraScanner<'r>(std::marker::PhantomData<&'r ()>);

    impl YaraScanner<'_> {
        pub fn first_match(&mut self, _object: &[u8]) -> Result<Option<String>, YaraScanError> {
            Ok(None)
        }
    }
}

pub use engine::{YaraRules, YaraScanner};

/// Whether this build evaluates YARA rules.
pub const COMPILED_IN: bool = cfg!(feature = "yara");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_of_an_offset() {
        let text = "rule a {\n  condition: tru\n}\n";
        let offset = text.find("tru").expect("test step");
        assert_eq!(line_column(text, offset), (2, 14));
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 10_000), (4, 1));
    }

    #[test]
    fn namespaces_are_identifiers() {
        assert_eq!(
            namespace(Path::new("/s/vendor-1.rules.yar")),
            "vendor_1_rules"
        );
    }

    #[cfg(feature = "yara")]
    #[test]
    fn a_rule_matches_and_is_named() {
        let source = (
            PathBuf::from("t.yar"),
            "rule Test_Marker { strings: $a = \"bulwark-yara-marker\" condition: $a }".into(),
        );
        let rules = YaraRules::compile(&[source]).expect("test step");
        assert_eq!(rules.rule_count(), 1);
        let mut scanner = rules.scanner().expect("test step");
        assert_eq!(
            scanner
                .first_match(b"xx bulwark-yara-marker xx")
                .expect("test step"),
            Some("YARA.Test_Marker".into())
        );
        assert_eq!(scanner.first_match(b"clean").expect("test step"), None);
    }

    #[cfg(feature = "yara")]
    #[test]
    fn a_syntax_error_names_file_line_and_column() {
        let good = (PathBuf::from("a.yar"), "rule a { condition: true }".into());
        let bad = (
            PathBuf::from("/sigs/b.yar"),
            "rule b {\n  strings: $x = \"x\"\n  condition: $x and\n}\n".into(),
        );
        let error = YaraRules::compile(&[good, bad]).expect_err("test step");
        assert_eq!(error.path, PathBuf::from("/sigs/b.yar"));
        assert_eq!(error.line, 4, "{error}");
        assert!(error.to_string().starts_with("/sigs/b.yar:4:"), "{error}");
    }

    #[cfg(not(feature = "yara"))]
    #[test]
    fn without_the_feature_files_are_ignored() {
        let source = (PathBuf::from("t.yar"), "not even yara".into());
        let rules = YaraRules::compile(&[source]).expect("test step");
        assert_eq!((rules.files_ignored(), rules.rule_count()), (1, 0));
        assert!(rules.scanner().is_none());
    }
}
