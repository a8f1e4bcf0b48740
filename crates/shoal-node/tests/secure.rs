//! A manager and a worker with TLS and tokens on: every service refuses a caller
//! without credentials, internal RPCs refuse anything but a node certificate of the
//! cluster CA, each permission allows exactly its routes, tokens are revoked on every
//! node, and the jobs path (manager → worker orders, worker → manager reports) works
//! over mutual TLS.

use std::{path::Path, time::Duration};

use shoal_client::{AdminClient, Credentials, JobsClient, KvClient, KvOptions, admin::Method};
use shoal_node::{Node, StartedNode};
use shoal_proto::v1 as pb;
use shoal_security::{
    Tls, TlsFiles, Transport,
    certs::{self, Subject},
};
use shoal_state::jobspec::Format;
use shoal_types::{NodeConfig, PartialConfig, Perms};
use tonic::Code;

const KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn config(id: &str, role: &str, seeds: Vec<String>, dir: &Path) -> NodeConfig {
    NodeConfig::resolve(PartialConfig {
        id: Some(id.into()),
        role: Some(role.into()),
        listen: Some("127.0.0.1:0".into()),
        profile: Some("local".into()),
        seeds: Some(seeds),
        data_dir: Some(dir.join(id)),
        bootstrap_expect: (role != "worker").then_some(1),
        cores: Some(2),
        tls_dir: Some(dir.join("tls")),
        cluster_key: Some(KEY.into()),
        ..Default::default()
    })
    .unwrap()
}

fn node_cert(dir: &Path, id: &str) {
    let subject = Subject::Node {
        id: id.into(),
        ips: vec![std::net::Ipv4Addr::LOCALHOST.into()],
        dns: vec![],
    };
    certs::issue(dir, &subject).unwrap();
}

/// TLS against the cluster CA in `tls`, with `token` and no certificate.
fn with_token(tls: &Path, token: Option<&str>) -> Credentials {
    let files = TlsFiles {
        ca: tls.join(certs::CA_CERT_FILE),
        own: None,
    };
    Credentials {
        transport: Transport::Tls(Tls::load(&files).unwrap()),
        token: token.map(str::to_string),
    }
}

fn kv(addr: std::net::SocketAddr, creds: &Credentials) -> KvClient {
    let options = KvOptions {
        deadline: Duration::from_secs(20),
        ..KvOptions::default()
    };
    KvClient::connect(&[addr.to_string()], options, creds).unwrap()
}

fn jobs(addr: std::net::SocketAddr, creds: &Credentials) -> JobsClient {
    let options = shoal_client::CallOptions {
        deadline: Duration::from_secs(20),
        ..Default::default()
    };
    JobsClient::connect(&[addr.to_string()], options, creds).unwrap()
}

fn admin(addr: std::net::SocketAddr, creds: &Credentials) -> AdminClient {
    AdminClient::new(addr.to_string())
        .with_timeout(Duration::from_secs(10))
        .with_credentials(creds.clone())
}

/// A raw channel with `creds` (its token in every call).
fn channel(addr: std::net::SocketAddr, creds: &Credentials) -> shoal_security::AuthChannel {
    let ch = creds
        .transport
        .endpoint(&addr.to_string())
        .unwrap()
        .connect_lazy();
    tonic::service::interceptor::InterceptedService::new(ch, creds.interceptor())
}

/// The status code of one call of each service on `addr`: (name, code).
async fn every_service(
    addr: std::net::SocketAddr,
    creds: &Credentials,
) -> Vec<(&'static str, Code)> {
    let ch = channel(addr, creds);
    let code = |r: Result<_, tonic::Status>| r.err().map_or(Code::Ok, |s| s.code());
    vec![
        (
            "Cluster.Members",
            code(
                pb::cluster_client::ClusterClient::new(ch.clone())
                    .members(pb::MembersRequest {})
                    .await
                    .map(drop),
            ),
        ),
        (
            "Kv.Get",
            code(
                pb::kv_client::KvClient::new(ch.clone())
                    .get(pb::GetRequest::default())
                    .await
                    .map(drop),
            ),
        ),
        (
            "Jobs.List",
            code(
                pb::jobs_client::JobsClient::new(ch.clone())
                    .list(pb::ListJobsRequest {})
                    .await
                    .map(drop),
            ),
        ),
        (
            "Chat.ListRooms",
            code(
                pb::chat_client::ChatClient::new(ch.clone())
                    .list_rooms(pb::ListRoomsRequest::default())
                    .await
                    .map(drop),
            ),
        ),
        (
            "Raft.Vote",
            code(
                pb::raft_client::RaftClient::new(ch.clone())
                    .vote(pb::RaftMessage::default())
                    .await
                    .map(drop),
            ),
        ),
        (
            "WorkerReports.Report",
            code(
                pb::worker_reports_client::WorkerReportsClient::new(ch.clone())
                    .report(pb::InternalMessage::default())
                    .await
                    .map(drop),
            ),
        ),
    ]
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a token through the admin API; returns it.
async fn create_token(
    m: &StartedNode,
    admin_creds: &Credentials,
    name: &str,
    perms: &str,
) -> String {
    let v = admin(m.tcp_addr, admin_creds)
        .request_json(
            Method::POST,
            "/v1/tokens",
            Some(serde_json::json!({ "name": name, "perms": perms })),
        )
        .await
        .unwrap();
    v["token"].as_str().unwrap().to_string()
}

const ECHO: &str =
    "name = \"hi\"\n[[workflows]]\nname = \"say\"\nkind = \"echo\"\nargs = { text = \"hi\" }\n";
const EXEC: &str = "name = \"cmd\"\n[[workflows]]\nname = \"run\"\nkind = \"exec\"\nargs = { command = \"sh\", args = [\"-c\", \"echo from-exec\"] }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_tokens_guard_every_service() {
    let dir = std::env::temp_dir().join(format!("shoal-secure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tls = dir.join("tls");
    let admin_token = certs::init(&tls).unwrap().admin_token;
    node_cert(&tls, "m1");
    node_cert(&tls, "w1");
    let m = Node::start(config("m1", "manager", vec![], &dir))
        .await
        .unwrap();
    let w = Node::start(config("w1", "worker", vec![m.tcp_addr.to_string()], &dir))
        .await
        .unwrap();
    let root = with_token(&tls, Some(&admin_token));
    kv(m.tcp_addr, &root)
        .put("ready", b"1")
        .await
        .expect("the bootstrap token writes");

    // Nobody: every service says UNAUTHENTICATED, HTTP says 401, nothing changes.
    let nobody = with_token(&tls, None);
    for (name, code) in every_service(m.tcp_addr, &nobody).await {
        assert_eq!(code, Code::Unauthenticated, "{name} without credentials");
    }
    let worker_run = pb::worker_client::WorkerClient::new(channel(w.tcp_addr, &nobody))
        .run(pb::InternalMessage::default())
        .await
        .unwrap_err();
    assert_eq!(worker_run.code(), Code::Unauthenticated, "Worker.Run");
    let err = admin(m.tcp_addr, &nobody)
        .status()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("401") && err.contains("no credentials"),
        "{err}"
    );
    let refused = kv(m.tcp_addr, &nobody)
        .put("k", b"v")
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("no credentials"), "{refused}");
    // Plaintext against the TLS port is not served.
    let plain = Credentials::insecure();
    assert!(admin(m.tcp_addr, &plain).status().await.is_err());
    // A wrong token is not recognised.
    let bogus = with_token(&tls, Some("shoal_not_a_real_token_at_all"));
    let err = admin(m.tcp_addr, &bogus)
        .status()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not recognised"), "{err}");

    // A node of another cluster cannot even finish the handshake; a client certificate
    // of this CA is no node: internal RPCs refuse it.
    let other = dir.join("other");
    certs::init(&other).unwrap();
    node_cert(&other, "m9");
    let mut foreign = TlsFiles::in_dir(&other, "m9");
    foreign.ca = tls.join(certs::CA_CERT_FILE);
    let foreign = Credentials {
        transport: Transport::Tls(Tls::load(&foreign).unwrap()),
        token: None,
    };
    for (name, code) in every_service(m.tcp_addr, &foreign).await {
        assert!(
            matches!(
                code,
                Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
            ),
            "{name} from a foreign node: {code:?}"
        );
    }
    certs::issue(
        &tls,
        &Subject::Client {
            name: "ops".into(),
            perms: Perms::ALL,
        },
    )
    .unwrap();
    let ops = Credentials {
        transport: Transport::Tls(Tls::load(&TlsFiles::in_dir(&tls, "ops")).unwrap()),
        token: None,
    };
    // Internal RPCs refuse it; the client services admit it (what they answer to an
    // empty request is theirs to say).
    for (name, code) in every_service(m.tcp_addr, &ops).await {
        let internal = name.starts_with("Raft") || name.starts_with("WorkerReports");
        if internal {
            assert_eq!(
                code,
                Code::PermissionDenied,
                "{name} with a client certificate"
            );
        } else {
            assert!(
                !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                "{name} with an admin client certificate: {code:?}"
            );
        }
    }

    // Tokens: each permission allows exactly its routes.
    let read = with_token(&tls, Some(&create_token(&m, &root, "reader", "read").await));
    let write = with_token(
        &tls,
        Some(&create_token(&m, &root, "writer", "write").await),
    );
    let exec = with_token(&tls, Some(&create_token(&m, &root, "runner", "exec").await));
    assert_eq!(
        kv(m.tcp_addr, &read)
            .get("ready", false)
            .await
            .unwrap()
            .map(|k| k.value),
        Some(b"1".to_vec())
    );
    let denied = kv(m.tcp_addr, &read)
        .put("k", b"v")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        denied.contains("Kv.Put needs `write`") && denied.contains("token reader"),
        "{denied}"
    );
    kv(m.tcp_addr, &write)
        .put("k", b"v")
        .await
        .expect("write token writes");
    let denied = jobs(m.tcp_addr, &write)
        .submit(EXEC, "cmd.toml", Format::Toml, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(denied.contains("needs `exec`"), "{denied}");
    jobs(m.tcp_addr, &write)
        .submit(ECHO, "hi.toml", Format::Toml, None)
        .await
        .expect("write token submits a job without commands");
    let id = jobs(m.tcp_addr, &exec)
        .submit(EXEC, "cmd.toml", Format::Toml, None)
        .await
        .expect("exec token submits a command")
        .id;
    // The command runs on the worker: orders and reports cross mutual TLS.
    let client = jobs(m.tcp_addr, &exec);
    wait_until(
        "the exec job completes",
        Duration::from_secs(30),
        || async { client.get(&id).await.is_ok_and(|j| j.state == "completed") },
    )
    .await;
    for (method, path) in [
        (Method::DELETE, "/v1/managers/m1"),
        (Method::PUT, "/v1/tags/x"),
    ] {
        let err = admin(m.tcp_addr, &exec)
            .request_json(method.clone(), path, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("403") && err.contains("needs `admin`"),
            "{method} {path}: {err}"
        );
    }
    // The worker checks tokens with the manager.
    admin(w.tcp_addr, &read)
        .status()
        .await
        .expect("read token on the worker");
    assert!(admin(w.tcp_addr, &nobody).status().await.is_err());

    // Revocation: the manager refuses at once, the worker within its cache period.
    admin(m.tcp_addr, &root)
        .request_json(Method::DELETE, "/v1/tokens/reader", None)
        .await
        .unwrap();
    let err = admin(m.tcp_addr, &read)
        .status()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not recognised"), "{err}");
    wait_until(
        "the worker refuses the revoked token",
        Duration::from_secs(10),
        || async { admin(w.tcp_addr, &read).status().await.is_err() },
    )
    .await;
    // And the bootstrap token can be revoked like any other.
    admin(m.tcp_addr, &root)
        .request_json(Method::DELETE, "/v1/tokens/bootstrap", None)
        .await
        .unwrap();
    assert!(admin(m.tcp_addr, &root).status().await.is_err());
    admin(m.tcp_addr, &ops)
        .status()
        .await
        .expect("the client certificate still works");

    w.shutdown().await;
    m.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Through a gate: it checks the caller's permissions itself (a `write` token cannot
/// submit commands there either), forwards to the datacenter's managers as a node over
/// mutual TLS, and checks tokens with a manager.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_checks_permissions_and_forwards_over_mutual_tls() {
    let dir = std::env::temp_dir().join(format!("shoal-secure-gate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tls = dir.join("tls");
    let admin_token = certs::init(&tls).unwrap().admin_token;
    for id in ["m1", "w1", "g1"] {
        node_cert(&tls, id);
    }
    let m = Node::start(config("m1", "manager", vec![], &dir))
        .await
        .unwrap();
    let seeds = vec![m.tcp_addr.to_string()];
    let w = Node::start(config("w1", "worker", seeds.clone(), &dir))
        .await
        .unwrap();
    let g = Node::start(config("g1", "gate", seeds, &dir))
        .await
        .unwrap();
    let root = with_token(&tls, Some(&admin_token));
    kv(m.tcp_addr, &root)
        .put("ready", b"1")
        .await
        .expect("the manager leads");
    let write = with_token(
        &tls,
        Some(&create_token(&m, &root, "writer", "write").await),
    );
    let exec = with_token(&tls, Some(&create_token(&m, &root, "runner", "exec").await));

    // The gate knows the DC (its managers and the worker) before it places anything.
    let through_gate = |creds: &Credentials| jobs(g.tcp_addr, creds);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let id = loop {
        match through_gate(&exec)
            .submit(EXEC, "cmd.toml", Format::Toml, None)
            .await
        {
            Ok(r) => break r.id,
            // The gate may not know the DC's leader and worker yet.
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("submit through the gate: {e}"),
        }
    };
    wait_until(
        "the job through the gate completes",
        Duration::from_secs(30),
        || async {
            through_gate(&exec)
                .get(&id)
                .await
                .is_ok_and(|j| j.state == "completed")
        },
    )
    .await;
    let denied = through_gate(&write)
        .submit(EXEC, "cmd.toml", Format::Toml, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(denied.contains("needs `exec`"), "{denied}");
    let nobody = with_token(&tls, None);
    let err = through_gate(&nobody).list().await.unwrap_err().to_string();
    assert!(err.contains("no credentials"), "{err}");
    admin(g.tcp_addr, &write)
        .status()
        .await
        .expect("the gate checks the token with a manager");

    g.shutdown().await;
    w.shutdown().await;
    m.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
