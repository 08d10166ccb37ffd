//! DANE for SMTP (RFC 7672, RFC 6698): TLSA records looked up through the DNSSEC-validating
//! resolver, and a rustls certificate verifier that accepts a next hop only when its chain
//! matches one of them.
//!
//! # Contract
//! - Only DANE-TA(2) and DANE-EE(3) with selector 0/1 and matching 0/1/2 are usable
//!   (RFC 7672 3.1); PKIX usages 0/1 are ignored for SMTP.
//! - DANE-EE ignores names and dates (RFC 7672 3.1.1); DANE-TA needs a chain from a matched
//!   certificate to the end entity that names the MX host (RFC 7672 3.1.2, 3.2.3).
//! - A lookup is `Secure` only when hickory proved every TLSA record with DNSSEC; an insecure
//!   answer or an insecure denial is `Insecure` (fall back), a bogus one `Bogus` (defer).

use std::sync::Arc;

use hickory_resolver::net::NetError;
use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::rr::{RData, RecordType};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256, Sha512};

/// One TLSA record, as published (`usage selector matching data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsaRecord {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

/// DANE-TA: the record names a trust anchor in (or beside) the presented chain.
pub const USAGE_DANE_TA: u8 = 2;
/// DANE-EE: the record names the server's own certificate or key.
pub const USAGE_DANE_EE: u8 = 3;

impl TlsaRecord {
    /// Whether RFC 7672 lets an SMTP client use this record.
    pub fn is_usable(&self) -> bool {
        matches!(self.usage, USAGE_DANE_TA | USAGE_DANE_EE)
            && self.selector <= 1
            && self.matching <= 2
            && (self.matching != 1 || self.data.len() == 32)
            && (self.matching != 2 || self.data.len() == 64)
    }

    /// Whether `certificate` (DER) is the one this record names, by its selector and
    /// matching type. A certificate that does not parse never matches.
    pub fn matches(&self, certificate: &[u8]) -> bool {
        let Some(selected) = select(certificate, self.selector) else {
            return false;
        };
        match self.matching {
            0 => selected == self.data.as_slice(),
            1 => Sha256::digest(selected).as_slice() == self.data.as_slice(),
            2 => Sha512::digest(selected).as_slice() == self.data.as_slice(),
            _ => false,
        }
    }

    /// `3 1 1 ab12…`, as in a zone file.
    pub fn presentation(&self) -> String {
        let hex: String = self.data.iter().map(|b| format!("{b:02x}")).collect();
        format!("{} {} {} {hex}", self.usage, self.selector, self.matching)
    }
}

/// The bytes a selector picks: 0 the whole certificate, 1 its SubjectPublicKeyInfo.
fn select(certificate: &[u8], selector: u8) -> Option<&[u8]> {
    match selector {
        0 => Some(certificate),
        1 => {
            let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
            let raw = parsed.tbs_certificate.subject_pki.raw;
            // `raw` borrows from `certificate`: find it there to return the longer lifetime.
            let start = raw.as_ptr() as usize - certificate.as_ptr() as usize;
            certificate.get(start..start + raw.len())
        }
        _ => None,
    }
}

/// What DNSSEC said about a host's TLSA records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsaLookup {
    /// Validated records; `usable` is empty when none of them may be used (defer).
    Secure {
        records: Vec<TlsaRecord>,
        usable: Vec<TlsaRecord>,
    },
    /// A validated proof that there are none: DANE does not apply.
    SecureNone,
    /// Unsigned zone (or no chain of trust): DANE does not apply.
    Insecure,
    /// Validation failed or the lookup did not complete: never fall back to less.
    Bogus(String),
}

/// `_PORT._tcp.HOST.`, the TLSA owner name (RFC 7672 2.2.3).
pub fn tlsa_name(host: &str, port: u16) -> String {
    format!("_{port}._tcp.{}.", host.trim_end_matches('.'))
}

/// Looks up and classifies the TLSA records of `host:port` with the validating resolver.
pub async fn lookup(
    resolver: &hickory_resolver::TokioResolver,
    host: &str,
    port: u16,
) -> TlsaLookup {
    let name = tlsa_name(host, port);
    match resolver.lookup(name.as_str(), RecordType::TLSA).await {
        Ok(lookup) => classify_answers(lookup.answers()),
        Err(error) => classify_error(&error),
    }
}

fn classify_answers(answers: &[hickory_resolver::proto::rr::Record]) -> TlsaLookup {
    let mut records = Vec::new();
    let mut proofs = Vec::new();
    for record in answers {
        if let RData::TLSA(tlsa) = &record.data {
            proofs.push(record.proof);
            records.push(TlsaRecord {
                usage: u8::from(tlsa.cert_usage),
                selector: u8::from(tlsa.selector),
                matching: u8::from(tlsa.matching),
                data: tlsa.cert_data.clone(),
            });
        }
    }
    if records.is_empty() {
        return TlsaLookup::Insecure;
    }
    if proofs.contains(&Proof::Bogus) {
        return TlsaLookup::Bogus("TLSA records failed DNSSEC validation".into());
    }
    if !proofs.iter().all(|p| *p == Proof::Secure) {
        return TlsaLookup::Insecure;
    }
    let usable = records.iter().filter(|r| r.is_usable()).cloned().collect();
    TlsaLookup::Secure { records, usable }
}

/// A negative answer is a secure denial when its NSEC/NSEC3 proof validated; the resolver
/// reports a bogus denial as an `Nsec` error.
pub(crate) fn classify_error(error: &NetError) -> TlsaLookup {
    use hickory_resolver::net::DnsError;
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => {
            let authorities = no_records.authorities.as_deref().unwrap_or(&[]);
            let denial = authorities
                .iter()
                .filter(|r| matches!(r.record_type(), RecordType::NSEC | RecordType::NSEC3));
            let mut any = false;
            for record in denial {
                any = true;
                if record.proof != Proof::Secure {
                    return TlsaLookup::Insecure;
                }
            }
            if any {
                TlsaLookup::SecureNone
            } else {
                TlsaLookup::Insecure
            }
        }
        NetError::Dns(DnsError::Nsec { proof, .. }) if *proof == Proof::Insecure => {
            TlsaLookup::Insecure
        }
        other => TlsaLookup::Bogus(other.to_string()),
    }
}

/// Accepts the next hop's certificate chain only when it matches a usable TLSA record.
#[derive(Debug)]
pub struct DaneVerifier {
    records: Vec<TlsaRecord>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl DaneVerifier {
    pub fn new(records: Vec<TlsaRecord>) -> Self {
        Self {
            records,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }

    /// DANE-TA: a matched certificate of the chain (or the record's full certificate)
    /// becomes the only root for a WebPKI check of the chain with the MX host's name.
    fn trust_anchor_chain(
        &self,
        record: &TlsaRecord,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> bool {
        let mut anchors: Vec<CertificateDer<'static>> = intermediates
            .iter()
            .filter(|c| record.matches(c))
            .map(|c| c.clone().into_owned())
            .collect();
        if record.selector == 0 && record.matching == 0 {
            anchors.push(CertificateDer::from(record.data.clone()));
        }
        anchors.into_iter().any(|anchor| {
            let mut roots = RootCertStore::empty();
            if roots.add(anchor).is_err() {
                return false;
            }
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build();
            verifier.is_ok_and(|v| {
                v.verify_server_cert(end_entity, intermediates, server_name, &[], now)
                    .is_ok()
            })
        })
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let matched = self.records.iter().any(|record| match record.usage {
            USAGE_DANE_EE => record.matches(end_entity),
            USAGE_DANE_TA => {
                self.trust_anchor_chain(record, end_entity, intermediates, server_name, now)
            }
            _ => false,
        });
        if matched {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "no TLSA record matches the certificate chain".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client config that verifies by `records` (which must be usable).
pub fn client_config(records: Vec<TlsaRecord>) -> Arc<rustls::ClientConfig> {
    let verifier = Arc::new(DaneVerifier::new(records));
    let provider = verifier.provider.clone();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        });
    // The ring provider always supports the default versions; if that ever changed, a
    // config with no roots fails every handshake, which is the safe side for DANE.
    Arc::new(config.unwrap_or_else(|_| {
        rustls::ClientConfig::builder()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificates() -> (Vec<u8>, Vec<u8>, rcgen::KeyPair) {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(vec!["mx.example.test".to_string()]).expect("params");
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let leaf = params.signed_by(&key, &issuer).expect("leaf");
        (leaf.der().to_vec(), ca.der().to_vec(), key)
    }

    fn record(usage: u8, selector: u8, matching: u8, cert: &[u8]) -> TlsaRecord {
        let selected = select(cert, selector).expect("parses").to_vec();
        let data = match matching {
            0 => selected,
            1 => Sha256::digest(&selected).to_vec(),
            _ => Sha512::digest(&selected).to_vec(),
        };
        TlsaRecord {
            usage,
            selector,
            matching,
            data,
        }
    }

    #[test]
    fn every_selector_and_matching_type_matches_its_certificate_only() {
        let (leaf, ca, key) = certificates();
        let spki = select(&leaf, 1).expect("spki");
        assert_eq!(
            spki,
            rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
        );
        for selector in 0..=1 {
            for matching in 0..=2 {
                let r = record(USAGE_DANE_EE, selector, matching, &leaf);
                assert!(r.is_usable());
                assert!(r.matches(&leaf), "{}", r.presentation());
                assert!(!r.matches(&ca), "{}", r.presentation());
            }
        }
        assert!(!record(3, 1, 1, &leaf).matches(b"not a certificate"));
    }

    #[test]
    fn usability_follows_rfc_7672() {
        let (leaf, _, _) = certificates();
        let mut r = record(3, 1, 1, &leaf);
        for (usage, usable) in [(0, false), (1, false), (2, true), (3, true), (4, false)] {
            r.usage = usage;
            assert_eq!(r.is_usable(), usable, "usage {usage}");
        }
        r.usage = 3;
        r.matching = 2; // a SHA-256 length under SHA-512
        assert!(!r.is_usable());
        r.matching = 3;
        assert!(!r.is_usable());
    }

    fn verify(records: Vec<TlsaRecord>, leaf: &[u8], chain: &[Vec<u8>], name: &str) -> bool {
        let verifier = DaneVerifier::new(records);
        let intermediates: Vec<CertificateDer<'_>> = chain
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let name = ServerName::try_from(name.to_string()).expect("name");
        verifier
            .verify_server_cert(
                &CertificateDer::from(leaf),
                &intermediates,
                &name,
                &[],
                UnixTime::now(),
            )
            .is_ok()
    }

    #[test]
    fn dane_ee_ignores_the_name_dane_ta_checks_chain_and_name() {
        let (leaf, ca, _) = certificates();
        let chain = vec![ca.clone()];
        assert!(verify(
            vec![record(3, 1, 1, &leaf)],
            &leaf,
            &[],
            "other.test"
        ));
        assert!(!verify(
            vec![record(3, 1, 1, &ca)],
            &leaf,
            &chain,
            "mx.example.test"
        ));
        for selector in 0..=1 {
            for matching in 0..=2 {
                let ta = record(2, selector, matching, &ca);
                assert!(verify(vec![ta.clone()], &leaf, &chain, "mx.example.test"));
                assert!(
                    !verify(vec![ta], &leaf, &chain, "other.test"),
                    "name checked"
                );
            }
        }
        // A full-certificate TA record works even when the server leaves the CA out.
        assert!(verify(
            vec![record(2, 0, 0, &ca)],
            &leaf,
            &[],
            "mx.example.test"
        ));
        // A TA record for the leaf itself is not a trust anchor of anything.
        assert!(!verify(
            vec![record(2, 1, 1, &leaf)],
            &leaf,
            &[],
            "mx.example.test"
        ));
    }
}
