//! When a certificate file's first (leaf) certificate expires: the node reports it in
//! `status`, the console's `certificate_expiring` alert compares it with the clock.

use std::path::Path;

use super::https::{read_certificates, PemError};

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("not an X.509 certificate: {0}")]
    Parse(String),
}

/// `notAfter` of the leaf certificate in the PEM file at `path`, in seconds since the epoch.
pub fn not_after(path: &Path) -> Result<i64, CertificateError> {
    let chain = read_certificates(path)?;
    let leaf = chain
        .first()
        .ok_or_else(|| CertificateError::Parse("empty chain".into()))?;
    let (_, certificate) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| CertificateError::Parse(e.to_string()))?;
    Ok(certificate.validity().not_after.timestamp())
}
