//! Replacing parts of a raw message by byte ranges, so that everything outside the ranges
//! stays byte-identical (no re-serialisation of the MIME tree).

/// One replacement: the bytes `start..end` of the raw message become `with`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splice {
    pub start: usize,
    pub end: usize,
    pub with: Vec<u8>,
}

/// The raw message's bytes from `from` on with the splices applied. Splices that start
/// before `from`, run past the end or overlap an earlier one are ignored (the caller made a
/// mistake; the message must not be corrupted for it).
pub fn apply(raw: &[u8], from: usize, splices: &[Splice]) -> Vec<u8> {
    let mut ordered: Vec<&Splice> = splices.iter().collect();
    ordered.sort_by_key(|s| s.start);
    let mut out = Vec::with_capacity(raw.len());
    let mut at = from.min(raw.len());
    for splice in ordered {
        if splice.start < at || splice.end < splice.start || splice.end > raw.len() {
            continue;
        }
        out.extend_from_slice(&raw[at..splice.start]);
        out.extend_from_slice(&splice.with);
        at = splice.end;
    }
    out.extend_from_slice(&raw[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_the_ranges_nothing_changes() {
        let raw = b"HEADER\r\n\r\naaaBBBcccDDDeee";
        let splices = [
            Splice {
                start: 19,
                end: 22,
                with: b"d".to_vec(),
            },
            Splice {
                start: 13,
                end: 16,
                with: b"bb".to_vec(),
            },
            Splice {
                start: 14,
                end: 20,
                with: b"overlap".to_vec(),
            },
        ];
        assert_eq!(apply(raw, 10, &splices), b"aaabbcccdeee");
    }
}

/// Edits of a message collected from several actions (strip, disclaimer), turned into one
/// body replacement at the end: a second `ReplaceBody` would undo the first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    pub splices: Vec<Splice>,
    /// Header edits for a message whose root part changed (Content-Type, ...).
    pub header: Vec<crate::pipeline::Modification>,
}

impl Edits {
    pub fn is_empty(&self) -> bool {
        self.splices.is_empty() && self.header.is_empty()
    }

    /// The modifications for the pipeline: the header edits, then the new body.
    pub fn into_modifications(
        self,
        raw: &[u8],
        body_offset: usize,
    ) -> Vec<crate::pipeline::Modification> {
        let mut out = self.header;
        if !self.splices.is_empty() {
            out.push(crate::pipeline::Modification::ReplaceBody(apply(
                raw,
                body_offset,
                &self.splices,
            )));
        }
        out
    }
}
