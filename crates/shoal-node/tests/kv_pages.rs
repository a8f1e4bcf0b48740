//! A KV listing is bounded by bytes, not only by keys: a page ends at about 3 MiB of
//! keys and values with a token to go on, so no request copies more than that under
//! the state lock, and the client follows the pages to the whole answer.

use std::time::Duration;

use shoal_client::{KvClient, KvOptions};
use shoal_node::Node;
use shoal_proto::v1::{ListRequest, kv_client::KvClient as RawKv};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_values_are_listed_in_pages() {
    let dir = std::env::temp_dir().join(format!("shoal-kv-pages-{}", std::process::id()));
    let m = Node::start(common::config("m1", "manager", vec![], &dir, 1))
        .await
        .unwrap();
    let options = KvOptions {
        deadline: Duration::from_secs(20),
        ..KvOptions::default()
    };
    let client = KvClient::new(&[m.tcp_addr.to_string()], options).unwrap();
    let value = vec![b'v'; 1_000_000];
    for i in 0..8 {
        client.put(&format!("big/{i}"), &value).await.unwrap();
    }
    client.put("other", b"x").await.unwrap();

    let mut raw = RawKv::connect(format!("http://{}", m.tcp_addr))
        .await
        .unwrap()
        .max_decoding_message_size(shoal_proto::GRPC_MESSAGE_BYTES_MAX);
    let page = |token: &str| ListRequest {
        prefix: "big/".into(),
        stale: false,
        limit: 0,
        page_token: token.into(),
    };
    let first = raw.list(page("")).await.unwrap().into_inner();
    assert!(first.more, "8 MB do not fit one page");
    assert!(
        (1..=3).contains(&first.kvs.len()),
        "a page holds about 3 MiB: {}",
        first.kvs.len()
    );
    assert_eq!(first.next_page_token, first.kvs.last().unwrap().key);
    let second = raw
        .list(page(&first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        second.kvs[0].key,
        format!("big/{}", first.kvs.len()),
        "the next page goes on"
    );
    let bad = raw.list(page("elsewhere")).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(
        bad.message().starts_with("page_token:"),
        "{}",
        bad.message()
    );

    // The client follows the pages: every key, in order, the other prefix left out.
    let all = client.list("big/", false, 0).await.unwrap();
    let keys: Vec<String> = all.kvs.iter().map(|kv| kv.key.clone()).collect();
    let expected: Vec<String> = (0..8).map(|i| format!("big/{i}")).collect();
    assert_eq!(keys, expected);
    assert!(!all.more);
    assert!(all.kvs.iter().all(|kv| kv.value == value));
    let five = client.list("big/", false, 5).await.unwrap();
    assert_eq!(five.kvs.len(), 5);
    assert!(five.more);
    m.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
