//! "An executable disguised as a document": the file's first bytes say program (PE, ELF,
//! Mach-O) while its declared name or type says document, picture or text.
//!
//! An executable that says what it is (`setup.exe`, `application/x-msdownload`) is not
//! disguised; blocking executables as such is an attachment-policy decision, not this check's.

/// The executable format `bytes` start with, if any.
pub fn executable_format(bytes: &[u8]) -> Option<&'static str> {
    if is_pe(bytes) {
        return Some("PE");
    }
    if bytes.starts_with(b"\x7fELF") {
        return Some("ELF");
    }
    const MACHO: [[u8; 4]; 5] = [
        [0xfe, 0xed, 0xfa, 0xce],
        [0xfe, 0xed, 0xfa, 0xcf],
        [0xce, 0xfa, 0xed, 0xfe],
        [0xcf, 0xfa, 0xed, 0xfe],
        [0xca, 0xfe, 0xba, 0xbe],
    ];
    if bytes.len() >= 4 && MACHO.iter().any(|m| bytes[..4] == *m) {
        return Some("Mach-O");
    }
    None
}

/// `MZ`, and the PE signature where the DOS header's `e_lfanew` points.
fn is_pe(bytes: &[u8]) -> bool {
    if !bytes.starts_with(b"MZ") || bytes.len() < 0x40 {
        return false;
    }
    let e_lfanew = u32::from_le_bytes([bytes[0x3c], bytes[0x3d], bytes[0x3e], bytes[0x3f]]);
    let at = e_lfanew as usize;
    bytes.get(at..at.saturating_add(4)) == Some(b"PE\0\0")
}

const DOCUMENT_EXTENSIONS: &[&str] = &[
    "pdf", "doc", "docx", "docm", "xls", "xlsx", "xlsm", "ppt", "pptx", "odt", "ods", "odp", "rtf",
    "txt", "csv", "jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "html", "htm", "mp3", "mp4",
    "wav", "zip",
];

const EXECUTABLE_EXTENSIONS: &[&str] = &[
    "exe", "dll", "scr", "com", "pif", "cpl", "sys", "msi", "bin", "elf", "so", "out", "run",
    "app", "dylib",
];

const DOCUMENT_TYPE_PREFIXES: &[&str] = &[
    "application/pdf",
    "application/msword",
    "application/rtf",
    "application/vnd.openxmlformats",
    "application/vnd.ms-",
    "application/vnd.oasis.opendocument",
    "image/",
    "text/",
    "audio/",
    "video/",
];

fn extension(name: &str) -> Option<String> {
    let (_, ext) = name.rsplit_once('.')?;
    Some(ext.trim().to_ascii_lowercase())
}

/// What in the declaration claims "document" for an object with executable content: the
/// name (`invoice.pdf`) or, when the name does not admit an executable, the type.
pub fn document_claim(name: Option<&str>, content_type: Option<&str>) -> Option<String> {
    let ext = name.and_then(extension);
    if let (Some(name), Some(ext)) = (name, &ext) {
        if DOCUMENT_EXTENSIONS.contains(&ext.as_str()) {
            return Some(format!("name {name:?}"));
        }
        if EXECUTABLE_EXTENSIONS.contains(&ext.as_str()) {
            return None;
        }
    }
    let content_type = content_type?.to_ascii_lowercase();
    DOCUMENT_TYPE_PREFIXES
        .iter()
        .any(|p| content_type.starts_with(p))
        .then(|| format!("type {content_type}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The smallest bytes `executable_format` takes for a Windows program.
    pub(crate) fn fake_pe() -> Vec<u8> {
        let mut pe = vec![0u8; 0x80];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        pe[0x40..0x44].copy_from_slice(b"PE\0\0");
        pe
    }

    #[test]
    fn formats() {
        assert_eq!(executable_format(&fake_pe()), Some("PE"));
        assert_eq!(
            executable_format(b"MZ but only text, no PE header at all ........................"),
            None
        );
        assert_eq!(executable_format(b"\x7fELF\x02\x01\x01"), Some("ELF"));
        assert_eq!(executable_format(b"%PDF-1.7"), None);
    }

    #[test]
    fn claims() {
        assert!(document_claim(Some("invoice.PDF"), Some("application/octet-stream")).is_some());
        assert!(document_claim(Some("setup.exe"), Some("text/plain")).is_none());
        assert!(document_claim(None, Some("image/png")).is_some());
        assert!(document_claim(Some("tool"), Some("application/octet-stream")).is_none());
        assert!(document_claim(None, None).is_none());
    }
}
