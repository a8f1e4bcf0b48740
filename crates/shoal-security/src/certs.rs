//! `shoal certs`: a cluster CA, and node and client certificates it signs.
//!
//! A directory holds `ca.pem` (public), `ca-key.pem` (the CA's key, mode 0600; keep it
//! off the nodes in production), and `<name>.pem` + `<name>-key.pem` per node or client.
//! What a certificate is, is written in its subject alternative names:
//!
//! ```text
//!  node n1      URI shoal://node/n1      DNS node.shoal (what clients verify) + --ip/--dns
//!  client ci    URI shoal://client/ci?perms=read,write
//! ```
//!
//! Re-issuing from an existing CA needs no certificate parser: the CA's subject name is
//! derived from its key, so the issuer is rebuilt from `ca-key.pem` alone.

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use shoal_types::{Perms, validate_name};

use crate::{
    SecurityError,
    identity::{NODE_SERVER_NAME, client_uri, node_uri},
    token,
};

/// The CA's files in a certificate directory.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The first admin token, for local use (`shoal dev` and the CLI read it).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// SHA-256 of the first admin token: nodes given the directory accept that token as
/// `admin` until it is revoked.
pub const BOOTSTRAP_HASH_FILE: &str = "bootstrap-token.sha256";

/// How long the CA is valid.
const CA_VALID_DAYS: i64 = 3_650;
/// How long node and client certificates are valid.
const LEAF_VALID_DAYS: i64 = 825;

/// What `init` made.
#[derive(Debug)]
pub struct InitReport {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// The first admin token (also in `admin.token`, mode 0600).
    pub admin_token: String,
}

/// Creates a cluster CA and a first admin token in `dir`. Refuses to overwrite a CA.
pub fn init(dir: &Path) -> Result<InitReport, SecurityError> {
    let ca_cert = dir.join(CA_CERT_FILE);
    if ca_cert.exists() {
        return Err(SecurityError::Exists(ca_cert));
    }
    create_private_dir(dir)?;
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = ca_params(&key)?.self_signed(&key).map_err(gen_err)?;
    let ca_key = dir.join(CA_KEY_FILE);
    write_file(&ca_key, key.serialize_pem().as_bytes(), 0o600)?;
    let admin_token = token::generate();
    write_file(
        &dir.join(ADMIN_TOKEN_FILE),
        format!("{admin_token}\n").as_bytes(),
        0o600,
    )?;
    write_file(
        &dir.join(BOOTSTRAP_HASH_FILE),
        format!("{}\n", token::hash(&admin_token)).as_bytes(),
        0o644,
    )?;
    // Written last: its presence means the directory is complete.
    write_file(&ca_cert, cert.pem().as_bytes(), 0o644)?;
    Ok(InitReport {
        ca_cert,
        ca_key,
        admin_token,
    })
}

/// What a new certificate is for.
#[derive(Debug, Clone)]
pub enum Subject {
    /// A node: its id, and the addresses and names it is reached by.
    Node {
        id: String,
        ips: Vec<IpAddr>,
        dns: Vec<String>,
    },
    /// A client of the API, with what it may do.
    Client { name: String, perms: Perms },
}

impl Subject {
    fn name(&self) -> &str {
        match self {
            Subject::Node { id, .. } => id,
            Subject::Client { name, .. } => name,
        }
    }
}

/// The files `issue` wrote.
#[derive(Debug)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Signs a certificate for `subject` with the CA in `dir`, writing `<name>.pem` and
/// `<name>-key.pem` (0600) there. An existing pair is replaced (re-issue).
pub fn issue(dir: &Path, subject: &Subject) -> Result<Issued, SecurityError> {
    let name = subject.name();
    validate_name(name).map_err(|e| SecurityError::Invalid {
        field: "name",
        rule: e.to_string(),
    })?;
    if matches!(name, "ca" | "ca-key" | "admin") {
        return Err(SecurityError::Invalid {
            field: "name",
            rule: format!("`{name}` is reserved for the CA's own files"),
        });
    }
    let ca_key_path = dir.join(CA_KEY_FILE);
    let ca_pem =
        fs::read_to_string(&ca_key_path).map_err(|e| SecurityError::read(&ca_key_path, e))?;
    let ca_key = KeyPair::from_pem(&ca_pem).map_err(|e| SecurityError::Parse {
        path: ca_key_path.clone(),
        reason: e.to_string(),
    })?;
    let issuer = Issuer::new(ca_params(&ca_key)?, &ca_key);
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = leaf_params(subject)?
        .signed_by(&key, &issuer)
        .map_err(gen_err)?;
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}-key.pem"));
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(Issued {
        cert: cert_path,
        key: key_path,
    })
}

/// The CA's parameters. Its subject name is derived from its key, so `issue` can
/// rebuild the same issuer from the key file alone.
fn ca_params(key: &KeyPair) -> Result<CertificateParams, SecurityError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "shoal");
    dn.push(
        DnType::CommonName,
        format!(
            "shoal cluster CA {}",
            &token::hash_bytes(key.public_key_raw())[..16]
        ),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_VALID_DAYS);
    Ok(params)
}

fn leaf_params(subject: &Subject) -> Result<CertificateParams, SecurityError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "shoal");
    dn.push(DnType::CommonName, subject.name());
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, LEAF_VALID_DAYS);
    let ia5 = |field: &'static str, s: String| {
        s.try_into()
            .map_err(|e: rcgen::Error| SecurityError::Invalid {
                field,
                rule: e.to_string(),
            })
    };
    match subject {
        Subject::Node { id, ips, dns } => {
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let mut sans = vec![
                SanType::URI(ia5("node", node_uri(id))?),
                SanType::DnsName(ia5("dns", NODE_SERVER_NAME.into())?),
            ];
            sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
            for name in dns {
                sans.push(SanType::DnsName(ia5("dns", name.clone())?));
            }
            params.subject_alt_names = sans;
        }
        Subject::Client { name, perms } => {
            if perms.is_empty() {
                return Err(SecurityError::Invalid {
                    field: "perms",
                    rule: "give at least one of read, write, exec, admin".into(),
                });
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.subject_alt_names = vec![SanType::URI(ia5("client", client_uri(name, *perms))?)];
        }
    }
    Ok(params)
}

/// Valid from yesterday (clocks drift) for `days` more.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let today = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    let (y, m, d) = civil_from_days(today - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(today + days);
    params.not_after = rcgen::date_time_ymd(y, m, d);
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

fn gen_err(e: rcgen::Error) -> SecurityError {
    SecurityError::Generate(e.to_string())
}

/// Creates `dir` (and parents) readable by its owner only.
fn create_private_dir(dir: &Path) -> Result<(), SecurityError> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| SecurityError::write(dir, e))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SecurityError> {
    crate::write_file_atomic(path, bytes, mode).map_err(|e| SecurityError::write(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_794), (2026, 12, 7));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
