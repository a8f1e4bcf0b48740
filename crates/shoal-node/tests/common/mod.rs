//! Shared by the in-process node tests (each test file uses a part of it).

#![allow(dead_code)]

use shoal_types::{NodeConfig, PartialConfig};

/// A node on loopback (port picked by the OS), profile `local`, data under `dir/id`; a
/// manager forms its group alone.
pub fn config(
    id: &str,
    role: &str,
    seeds: Vec<String>,
    dir: &std::path::Path,
    cores: u32,
) -> NodeConfig {
    NodeConfig::resolve(PartialConfig {
        id: Some(id.into()),
        role: Some(role.into()),
        listen: Some("127.0.0.1:0".into()),
        profile: Some("local".into()),
        // Functional tests run plaintext; tests/secure.rs runs with TLS and tokens.
        insecure: Some(true),
        seeds: Some(seeds),
        data_dir: Some(dir.join(id)),
        bootstrap_expect: (role == "manager").then_some(1),
        cores: Some(cores),
        ..Default::default()
    })
    .unwrap()
}

/// A jobs client on one manager; each call may take 20 s.
pub fn jobs_client(addr: std::net::SocketAddr) -> shoal_client::JobsClient {
    shoal_client::JobsClient::new(
        &[addr.to_string()],
        shoal_client::CallOptions {
            deadline: std::time::Duration::from_secs(20),
            ..shoal_client::CallOptions::default()
        },
    )
    .unwrap()
}
