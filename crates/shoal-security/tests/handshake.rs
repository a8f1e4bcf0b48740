//! The TLS pieces end to end on loopback: a CA made by `certs::init`, certificates it
//! issued, the node's listener reading who connected, and a certificate of another CA
//! refused in the handshake.

use std::{net::Ipv4Addr, path::Path};

use axum::{Router, extract::ConnectInfo, routing::get};
use shoal_security::{
    Credentials, Peer, PeerCert, ShoalListener, Tls, TlsFiles, Transport,
    certs::{self, Subject},
    token,
};
use shoal_types::{Perm, Perms};

fn node(dir: &Path, id: &str) {
    let subject = Subject::Node {
        id: id.into(),
        ips: vec![Ipv4Addr::LOCALHOST.into()],
        dns: vec!["localhost".into()],
    };
    certs::issue(dir, &subject).expect("issue node certificate");
}

/// Serves `GET /who` (the peer as the listener saw it) over TLS with `n1`'s certificate.
async fn serve(dir: &Path) -> std::net::SocketAddr {
    let tls = Tls::load(&TlsFiles::in_dir(dir, "n1")).expect("load n1");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = ShoalListener::new(tcp, Some(tls.server_config().unwrap()));
    let app = Router::new().route(
        "/who",
        get(|ConnectInfo(peer): ConnectInfo<Peer>| async move { peer.cert.describe() }),
    );
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .await
            .unwrap();
    });
    addr
}

/// One HTTP/1.1 GET over `transport`; the body, or the error as text.
async fn who(transport: &Transport, addr: std::net::SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut conn = transport
        .connect(&addr.to_string())
        .await
        .map_err(|e| e.to_string())?;
    conn.write_all(b"GET /who HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    conn.read_to_string(&mut text)
        .await
        .map_err(|e| e.to_string())?;
    Ok(text
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string())
}

#[tokio::test]
async fn the_listener_names_who_connected_and_refuses_strangers() {
    let dir = tempdir("who");
    let report = certs::init(&dir).expect("init");
    assert!(report.admin_token.starts_with(token::TOKEN_PREFIX));
    let hash = std::fs::read_to_string(dir.join(certs::BOOTSTRAP_HASH_FILE)).unwrap();
    assert_eq!(hash.trim(), token::hash(&report.admin_token));
    assert!(matches!(
        certs::init(&dir),
        Err(shoal_security::SecurityError::Exists(_))
    ));
    node(&dir, "n1");
    node(&dir, "n2");
    let ci = Subject::Client {
        name: "ci".into(),
        perms: Perms::of(Perm::Write),
    };
    certs::issue(&dir, &ci).unwrap();
    let addr = serve(&dir).await;

    let as_node = Transport::Tls(Tls::load(&TlsFiles::in_dir(&dir, "n2")).unwrap());
    assert_eq!(who(&as_node, addr).await.unwrap(), "node n2");
    let as_client = Transport::Tls(Tls::load(&TlsFiles::in_dir(&dir, "ci")).unwrap());
    assert_eq!(who(&as_client, addr).await.unwrap(), "client ci");
    let ci_cert = Tls::load(&TlsFiles::in_dir(&dir, "ci"))
        .unwrap()
        .own_identity();
    assert_eq!(
        ci_cert,
        PeerCert::Client {
            name: "ci".into(),
            perms: Perms::of(Perm::Write)
        }
    );
    let ca_only = TlsFiles {
        ca: dir.join(certs::CA_CERT_FILE),
        own: None,
    };
    let anonymous = Transport::Tls(Tls::load(&ca_only).unwrap());
    assert_eq!(who(&anonymous, addr).await.unwrap(), "no certificate");

    // A node of another cluster: its certificate does not chain to this CA.
    let other = tempdir("other");
    certs::init(&other).unwrap();
    node(&other, "n9");
    let mut stranger = TlsFiles::in_dir(&other, "n9");
    stranger.ca = dir.join(certs::CA_CERT_FILE);
    let stranger = Transport::Tls(Tls::load(&stranger).unwrap());
    assert!(
        who(&stranger, addr).await.is_err(),
        "a foreign certificate was accepted"
    );
    // And a client trusting another CA does not accept this server.
    let wrong_ca = Transport::Tls(Tls::load(&TlsFiles::in_dir(&other, "n9")).unwrap());
    let err = who(&wrong_ca, addr).await.unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    // Plaintext against a TLS port is never served (rustls answers with an alert).
    let plain = who(&Transport::Plain, addr).await;
    assert!(
        plain.as_ref().map_or(true, |b| !b.contains("certificate")),
        "{plain:?}"
    );
    assert_eq!(Credentials::default().bearer(), None);
}

#[test]
fn keys_are_private_and_names_are_checked() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempdir("modes");
    certs::init(&dir).unwrap();
    node(&dir, "m1");
    for f in ["ca-key.pem", "m1-key.pem", "admin.token"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let bad = Subject::Node {
        id: "no spaces".into(),
        ips: vec![],
        dns: vec![],
    };
    let err = certs::issue(&dir, &bad).unwrap_err().to_string();
    assert!(err.starts_with("name: must be"), "{err}");
    let missing = certs::issue(
        &tempdir("none"),
        &Subject::Client {
            name: "x".into(),
            perms: Perms::ALL,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(missing.contains("ca-key.pem"), "{missing}");
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "shoal-security-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
