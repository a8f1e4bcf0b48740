//! [`KvClient`]: the replicated KV store over gRPC, with failover.
//!
//! Give it any managers of a datacenter. Each call goes to the server that answered
//! last; when it cannot be reached, has no leader, or the outcome of a write is unknown,
//! the call moves to the next server (pausing with capped doubling after each full
//! round) until the call's deadline. Every write carries (client id, sequence) so a
//! retried write is applied once, even if the first attempt committed.

use shoal_security::{AuthChannel, Credentials};
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use rand::RngExt as _;
use shoal_proto::{
    GRPC_MESSAGE_BYTES_MAX,
    v1::{
        CasRequest, DeleteRequest, GetRequest, KeyValue, ListRequest, PutRequest, WriteTag,
        kv_client::KvClient as RawKv,
    },
};
use shoal_types::Fence;
use tonic::Status;

use crate::whole_body::WholeBody;

pub use crate::servers::{
    CallError as KvClientError, CallOptions as KvOptions, Servers, parse_servers,
};

pub use shoal_state::kv::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// The `shoal dev` managers: what `--servers` defaults to.
pub const DEV_SERVERS: &str = "127.0.0.1:9000,127.0.0.1:9002,127.0.0.1:9004";

/// Outcome of a committed put or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The store revision of this change (0 for a delete of a missing key).
    pub revision: u64,
    /// Put: the key's revision before (None: it did not exist). Delete: whether it
    /// existed (Some(revision of the deletion)).
    pub previous: Option<u64>,
    pub fence: Fence,
}

/// Outcome of a compare-and-set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasOutcome {
    pub succeeded: bool,
    /// On success the new revision; on failure the key's current one (0: absent).
    pub revision: u64,
    pub fence: Fence,
}

/// A page of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub kvs: Vec<KeyValue>,
    /// More keys matched than were returned.
    pub more: bool,
    pub store_revision: u64,
}

/// Most keys one `list` returns (the server's own cap).
pub const LIST_KEYS_MAX: usize = 10_000;

/// A KV client bound to a list of servers.
pub struct KvClient {
    servers: Servers<RawKv<WholeBody<AuthChannel>>>,
    client_id: u64,
    seq: AtomicU64,
}

impl std::fmt::Debug for KvClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvClient")
            .field("servers", &self.servers.list())
            .field("client_id", &self.client_id)
            .finish()
    }
}

fn fence(f: Option<shoal_proto::v1::Fence>) -> Fence {
    f.map_or(Fence::default(), |f| Fence::new(f.term, f.index))
}

impl KvClient {
    /// A client for `servers` (`HOST:PORT` each). Connects lazily; call it from within
    /// a Tokio runtime.
    pub fn new(servers: &[String], options: KvOptions) -> Result<Self, KvClientError> {
        Self::connect(servers, options, &Credentials::insecure())
    }

    /// Like [`new`](Self::new), with TLS and a token.
    pub fn connect(
        servers: &[String],
        options: KvOptions,
        creds: &Credentials,
    ) -> Result<Self, KvClientError> {
        let servers = Servers::connect(servers, options, creds, |channel| {
            // Unary calls only: each request leaves in one piece (see `whole_body`).
            RawKv::new(WholeBody::new(channel))
                .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        })?;
        Ok(Self {
            servers,
            client_id: rand::rng().random_range(1..u64::MAX),
            seq: AtomicU64::new(0),
        })
    }

    /// This client's id (in every write tag).
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The server's own checks, made before anything is sent.
    fn check(key: &str, value: Option<&[u8]>) -> Result<(), KvClientError> {
        let rejected = |e: shoal_state::KvError| KvClientError::Rejected(e.to_string());
        shoal_state::kv::validate_key(key).map_err(rejected)?;
        if let Some(v) = value {
            shoal_state::kv::validate_value(v).map_err(rejected)?;
        }
        Ok(())
    }

    fn next_tag(&self) -> Option<WriteTag> {
        Some(WriteTag {
            client_id: self.client_id,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }

    async fn call<T, F, Fut>(&self, call: F) -> Result<T, KvClientError>
    where
        F: FnMut(RawKv<WholeBody<AuthChannel>>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        self.servers.call(call).await
    }

    /// Writes `value` under `key`; returns once committed.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<Written, KvClientError> {
        Self::check(key, Some(value))?;
        let tag = self.next_tag();
        self.call(|mut c, t| {
            let mut req = tonic::Request::new(PutRequest {
                key: key.to_string(),
                value: value.to_vec(),
                tag,
            });
            req.set_timeout(t);
            async move {
                let r = c.put(req).await?.into_inner();
                Ok(Written {
                    revision: r.revision,
                    previous: (r.previous_revision != 0).then_some(r.previous_revision),
                    fence: fence(r.fence),
                })
            }
        })
        .await
    }

    /// The key's value and revisions (None: absent). Linearizable unless `stale`.
    pub async fn get(&self, key: &str, stale: bool) -> Result<Option<KeyValue>, KvClientError> {
        Self::check(key, None)?;
        self.call(|mut c, t| {
            let mut req = tonic::Request::new(GetRequest {
                key: key.to_string(),
                stale,
            });
            req.set_timeout(t);
            async move { Ok(c.get(req).await?.into_inner().kv) }
        })
        .await
    }

    /// Deletes `key`; `previous` is Some if it existed.
    pub async fn delete(&self, key: &str) -> Result<Written, KvClientError> {
        Self::check(key, None)?;
        let tag = self.next_tag();
        self.call(|mut c, t| {
            let mut req = tonic::Request::new(DeleteRequest {
                key: key.to_string(),
                tag,
            });
            req.set_timeout(t);
            async move {
                let r = c.delete(req).await?.into_inner();
                Ok(Written {
                    revision: r.revision,
                    previous: r.existed.then_some(r.revision),
                    fence: fence(r.fence),
                })
            }
        })
        .await
    }

    /// Keys starting with `prefix`, in order; `limit` 0 = the server's maximum.
    pub async fn list(
        &self,
        prefix: &str,
        stale: bool,
        limit: u32,
    ) -> Result<Listing, KvClientError> {
        // The server ends a page at `limit` keys or at ~3 MiB; follow its pages until
        // `limit` keys (0: the server's maximum) or the end. Each page is its own read.
        let want = if limit == 0 {
            LIST_KEYS_MAX
        } else {
            limit as usize
        };
        let mut out = Listing {
            kvs: Vec::new(),
            more: false,
            store_revision: 0,
        };
        let mut token = String::new();
        loop {
            let left = (want - out.kvs.len()) as u32;
            let page = self.list_page(prefix, stale, left, &token).await?;
            out.kvs.extend(page.kvs);
            out.store_revision = page.store_revision;
            out.more = page.more;
            if !page.more || out.kvs.len() >= want || page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }

    async fn list_page(
        &self,
        prefix: &str,
        stale: bool,
        limit: u32,
        token: &str,
    ) -> Result<shoal_proto::v1::ListResponse, KvClientError> {
        self.call(|mut c, t| {
            let mut req = tonic::Request::new(ListRequest {
                prefix: prefix.to_string(),
                stale,
                limit,
                page_token: token.to_string(),
            });
            req.set_timeout(t);
            async move { Ok(c.list(req).await?.into_inner()) }
        })
        .await
    }

    /// Writes only if the key's revision is `expected` (0: the key must be absent).
    pub async fn cas(
        &self,
        key: &str,
        value: &[u8],
        expected: u64,
    ) -> Result<CasOutcome, KvClientError> {
        Self::check(key, Some(value))?;
        let tag = self.next_tag();
        self.call(|mut c, t| {
            let mut req = tonic::Request::new(CasRequest {
                key: key.to_string(),
                value: value.to_vec(),
                expected_revision: expected,
                tag,
            });
            req.set_timeout(t);
            async move {
                let r = c.cas(req).await?.into_inner();
                Ok(CasOutcome {
                    succeeded: r.succeeded,
                    revision: r.revision,
                    fence: fence(r.fence),
                })
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servers::retryable;

    #[test]
    fn server_lists_are_checked() {
        assert_eq!(
            parse_servers(" 127.0.0.1:9000, localhost:9002 ,").unwrap(),
            ["127.0.0.1:9000", "localhost:9002"]
        );
        for bad in ["", " , ", "127.0.0.1", "127.0.0.1:0", "h:99999", ":9000"] {
            let e = parse_servers(bad).unwrap_err();
            assert!(e.to_string().starts_with("servers: "), "{bad}: {e}");
        }
        assert!(parse_servers(DEV_SERVERS).is_ok());
    }

    #[test]
    fn only_transient_failures_move_to_another_server() {
        assert!(retryable(&Status::unavailable("no leader")));
        assert!(retryable(&Status::unimplemented("worker")));
        assert!(!retryable(&Status::invalid_argument("key: too long")));
        assert!(!retryable(&Status::failed_precondition("tag: expired")));
    }
}
