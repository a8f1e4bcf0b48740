//! Who is on the other end of a connection, as its certificate says.

use rustls_pki_types::CertificateDer;
use shoal_types::Perms;

/// The DNS name every node certificate carries and every client verifies: a certificate
/// of the cluster CA with this name is a node of the cluster.
pub const NODE_SERVER_NAME: &str = "node.shoal";

const NODE_URI: &str = "shoal://node/";
const CLIENT_URI: &str = "shoal://client/";

pub(crate) fn node_uri(id: &str) -> String {
    format!("{NODE_URI}{id}")
}

pub(crate) fn client_uri(name: &str, perms: Perms) -> String {
    format!("{CLIENT_URI}{name}?perms={perms}")
}

/// What a peer's certificate (already verified against the cluster CA during the
/// handshake) says it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PeerCert {
    /// No certificate: a plaintext connection, or a TLS client that sent none.
    #[default]
    None,
    /// A node of the cluster.
    Node(String),
    /// A client certificate with the permissions written in it.
    Client { name: String, perms: Perms },
    /// A certificate of the CA that names neither (grants nothing).
    Unrecognised,
}

impl PeerCert {
    /// Reads the identity from a verified leaf certificate.
    pub fn from_verified_leaf(der: &CertificateDer<'_>) -> Self {
        let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
            return PeerCert::Unrecognised;
        };
        for uri in cert.valid_uri_names() {
            if let Some(id) = uri.strip_prefix(NODE_URI)
                && shoal_types::validate_name(id).is_ok()
            {
                return PeerCert::Node(id.to_string());
            }
            if let Some(rest) = uri.strip_prefix(CLIENT_URI) {
                let Some((name, perms)) = rest.split_once("?perms=") else {
                    continue;
                };
                if let (Ok(()), Ok(perms)) = (shoal_types::validate_name(name), perms.parse()) {
                    return PeerCert::Client {
                        name: name.to_string(),
                        perms,
                    };
                }
            }
        }
        PeerCert::Unrecognised
    }

    /// `node n1`, `client ci`, for logs and refusals.
    pub fn describe(&self) -> String {
        match self {
            PeerCert::None => "no certificate".into(),
            PeerCert::Node(id) => format!("node {id}"),
            PeerCert::Client { name, .. } => format!("client {name}"),
            PeerCert::Unrecognised => "a certificate naming no node or client".into(),
        }
    }
}
