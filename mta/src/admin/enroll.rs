//! `bulwarkctl node enroll`: the certificates of the control federation, made locally.
//!
//! One private CA per installation (`DIR/ca.pem`, `DIR/ca.key`, made on first use and then
//! reused); a server certificate per node (`DIR/NODE.pem`/`.key`, naming the node's host) and
//! one client certificate for the console (`DIR/console.pem`/`.key`). Nodes trust the CA for
//! client certificates (`[control] ca`); the console trusts it for node certificates
//! (`[console] ca`). Keys are written mode 0600 and never overwritten.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

const CA_NAME: &str = "Bulwark control CA";

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

/// The files one enrolment produced or reused.
#[derive(Debug, serde::Serialize)]
pub struct Enrolled {
    pub ca: PathBuf,
    pub node_certificate: PathBuf,
    pub node_private_key: PathBuf,
    pub console_certificate: PathBuf,
    pub console_private_key: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EnrollError + '_ {
    move |source| EnrollError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), EnrollError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    file.write_all(contents.as_bytes()).map_err(io(path))
}

fn ca_params() -> Result<CertificateParams, EnrollError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// The CA's key, made (with its self-signed certificate) when `dir` has none.
fn ca_key(dir: &Path) -> Result<KeyPair, EnrollError> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    if key_path.exists() {
        let pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
        return Ok(KeyPair::from_pem(&pem)?);
    }
    let key = KeyPair::generate()?;
    let certificate = ca_params()?.self_signed(&key)?;
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    write_new(&cert_path, &certificate.pem(), 0o644)?;
    Ok(key)
}

fn issue(
    dir: &Path,
    stem: &str,
    names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    ca: &KeyPair,
) -> Result<(PathBuf, PathBuf), EnrollError> {
    let (cert_path, key_path) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let mut params = CertificateParams::new(names)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, stem);
    params.distinguished_name = name;
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let ca_params = ca_params()?;
    let issuer = Issuer::from_params(&ca_params, ca);
    let certificate = params.signed_by(&key, &issuer)?;
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    write_new(&cert_path, &certificate.pem(), 0o644)?;
    Ok((cert_path, key_path))
}

/// Enrols node `name` reachable as `hosts` (DNS names or IP addresses its certificate names).
pub fn enroll(dir: &Path, name: &str, hosts: &[String]) -> Result<Enrolled, EnrollError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let ca = ca_key(dir)?;
    let mut names = vec![name.to_string()];
    names.extend(hosts.iter().filter(|h| h.as_str() != name).cloned());
    let (node_certificate, node_private_key) =
        issue(dir, name, names, ExtendedKeyUsagePurpose::ServerAuth, &ca)?;
    let (console_certificate, console_private_key) = issue(
        dir,
        "console",
        vec!["bulwark-console".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
        &ca,
    )?;
    Ok(Enrolled {
        ca: dir.join("ca.pem"),
        node_certificate,
        node_private_key,
        console_certificate,
        console_private_key,
    })
}
