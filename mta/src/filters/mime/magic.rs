//! The type of an object from its first bytes (magic numbers), as a MIME type, so that a
//! renamed executable is still an executable whatever its name or declared type.

/// (prefix, type), first match wins.
const SIGNATURES: &[(&[u8], &str)] = &[
    (b"MZ", "application/x-msdownload"),
    (b"\x7fELF", "application/x-executable"),
    (b"\xfe\xed\xfa\xce", "application/x-mach-binary"),
    (b"\xfe\xed\xfa\xcf", "application/x-mach-binary"),
    (b"\xcf\xfa\xed\xfe", "application/x-mach-binary"),
    (b"\xce\xfa\xed\xfe", "application/x-mach-binary"),
    (b"#!", "text/x-shellscript"),
    (b"PK\x03\x04", "application/zip"),
    (b"PK\x05\x06", "application/zip"),
    (b"%PDF-", "application/pdf"),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "application/x-ole-storage",
    ),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"\x1f\x8b", "application/gzip"),
    (b"{\\rtf", "application/rtf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
];

/// The detected type, or None when the bytes match no known signature.
pub fn detect(bytes: &[u8]) -> Option<&'static str> {
    SIGNATURES
        .iter()
        .find(|(prefix, _)| bytes.starts_with(prefix))
        .map(|(_, kind)| *kind)
}

/// An Office Open XML document is a zip with a known main part: its real type.
pub fn office_type<'a>(member_names: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    for name in member_names {
        let kind = match name {
            "xl/workbook.xml" => {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            }
            "word/document.xml" => {
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            }
            "ppt/presentation.xml" => {
                "application/vnd.openxmlformats-officedocument.presentationml.presentation"
            }
            _ => continue,
        };
        return Some(kind);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        assert_eq!(detect(b"MZ\x90\x00"), Some("application/x-msdownload"));
        assert_eq!(detect(b"%PDF-1.7"), Some("application/pdf"));
        assert_eq!(detect(b"hello"), None);
        assert_eq!(
            office_type(["[Content_Types].xml", "xl/workbook.xml"]),
            Some("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        );
    }
}
