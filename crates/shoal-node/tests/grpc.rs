//! gRPC and the admin HTTP API on one port: a tonic client and an HTTP client talk to
//! the same node, and the gRPC event stream reports a member joining.

use std::time::Duration;

use shoal_client::AdminClient;
use shoal_node::Node;
use shoal_proto::v1::{MembersRequest, WatchEventsRequest, cluster_client::ClusterClient};
use shoal_types::{NodeConfig, PartialConfig};
use tokio_stream::StreamExt;

fn config(id: &str, seeds: Vec<String>, dir: &std::path::Path) -> NodeConfig {
    NodeConfig::resolve(PartialConfig {
        id: Some(id.into()),
        role: Some("worker".into()),
        listen: Some("127.0.0.1:0".into()),
        profile: Some("local".into()),
        // Functional tests run plaintext; tests/secure.rs runs with TLS and tokens.
        insecure: Some(true),
        seeds: Some(seeds),
        data_dir: Some(dir.join(id)),
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test]
async fn grpc_and_http_share_the_port() {
    let dir = std::env::temp_dir().join(format!("shoal-grpc-{}", std::process::id()));
    let a = Node::start(config("g1", vec![], &dir)).await.unwrap();
    let url = format!("http://{}", a.tcp_addr);
    let mut client = ClusterClient::connect(url).await.unwrap();
    let members = client
        .members(MembersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(members.node_id, "g1");
    assert_eq!(members.members.len(), 1);
    assert!(members.members[0].is_self);

    // The HTTP admin API answers on the very same port.
    let doc = AdminClient::new(a.tcp_addr.to_string())
        .status()
        .await
        .unwrap();
    assert_eq!(doc.node.id, "g1");

    let mut events = client
        .watch_events(WatchEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let b = Node::start(config("g2", vec![a.tcp_addr.to_string()], &dir))
        .await
        .unwrap();
    let joined = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = events.next().await {
            let e = e.unwrap();
            if e.kind == "NodeJoined" && e.member.as_ref().is_some_and(|m| m.id == "g2") {
                return e;
            }
        }
        panic!("event stream ended");
    })
    .await
    .expect("a NodeJoined event for g2 within 20 s");
    assert_eq!(joined.member.unwrap().state, "alive");
    b.kill().await;
    a.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}
