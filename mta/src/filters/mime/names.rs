//! Attachment names as a mail client would show them and as an operating system would treat
//! them: the candidates a name glob is matched against.
//!
//! Tricks covered: bidirectional controls (`invoice\u{202e}fdp.exe` shows as `invoiceexe.pdf`),
//! zero-width characters, trailing dots and spaces (Windows drops them: `a.exe. .` is `a.exe`),
//! directory parts (`../x.exe`, `dir\x.exe`). Double extensions need no special case: the
//! glob sees the whole name (`*.exe` matches `invoice.pdf.exe`).

/// Bidirectional formatting characters (RLO, LRO, isolates, marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200d}' | '\u{feff}' | '\u{00ad}') || c.is_control()
}

/// The name without directories, invisible characters and the trailing dots and spaces.
fn cleaned(name: &str, bidi_as_dot: bool) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let mut out = String::with_capacity(base.len());
    let mut dotted = false;
    for c in base.chars() {
        if is_bidi_control(c) {
            // The text after an override is what the name really ends with, shown reversed:
            // treating the control as an extension separator exposes it to `*.exe`.
            if bidi_as_dot && !dotted && !out.ends_with('.') {
                out.push('.');
                dotted = true;
            }
        } else if !is_invisible(c) {
            out.push(c);
        }
    }
    out.trim_end_matches(['.', ' ', '\t'])
        .trim_start()
        .to_string()
}

/// Every form of `name` a glob should be tried on (at least one; no duplicates).
pub fn candidates(name: &str) -> Vec<String> {
    let mut found = vec![cleaned(name, false)];
    if name.chars().any(is_bidi_control) {
        let dotted = cleaned(name, true);
        if !found.contains(&dotted) {
            found.push(dotted);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::candidates;

    #[test]
    fn tricks_are_undone() {
        assert_eq!(candidates("a.exe. . "), vec!["a.exe"]);
        assert_eq!(candidates("../../dir\\x.exe"), vec!["x.exe"]);
        assert_eq!(candidates("in\u{200b}voice.exe"), vec!["invoice.exe"]);
        let rlo = candidates("invoice\u{202e}fdp.exe");
        assert!(rlo.contains(&"invoicefdp.exe".to_string()), "{rlo:?}");
        let rlo = candidates("invoice.pdf\u{202e}exe");
        assert!(rlo.contains(&"invoice.pdf.exe".to_string()), "{rlo:?}");
    }
}
