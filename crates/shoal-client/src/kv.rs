//! [`KvClient`]: the replicated KV store over gRPC, with failover.
//!
//! Give it any managers of a datacenter. Each call goes to the server that answered
//! last; when it cannot be reached, has no leader, or the outcome of a write is unknown,
//! the call moves to the next server (pausing with capped doubling after each full
//! round) until the call's deadline. Every write carries (client id, sequence) so a
//! retried write is applied once, even if the first attempt committed.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rand::RngExt as _;
use shoal_proto::{
    GRPC_MESSAGE_BYTES_MAX,
    v1::{
        CasRequest, DeleteRequest, GetRequest, KeyValue, ListRequest, PutRequest, WriteTag,
        kv_client::KvClient as RawKv,
    },
};
use shoal_types::{Fence, backoff::capped_doubling};
use tonic::{Code, Status, transport::Channel};

pub use shoal_state::kv::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// The `shoal dev` managers: what `--servers` defaults to.
pub const DEV_SERVERS: &str = "127.0.0.1:9000,127.0.0.1:9002,127.0.0.1:9004";

/// Why a KV call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvClientError {
    /// The request was refused as it stands; retrying will not help. Nothing changed.
    #[error("{0}")]
    Rejected(String),
    /// No server could complete the call before the deadline.
    #[error(
        "no server completed the call within {waited_ms} ms (tried {servers}); last error: {last}"
    )]
    Unavailable {
        servers: String,
        waited_ms: u64,
        last: String,
    },
    /// The `--servers` list is unusable.
    #[error("servers: {0}")]
    BadServers(String),
}

/// Timeouts of a [`KvClient`].
#[derive(Debug, Clone, Copy)]
pub struct KvOptions {
    /// One attempt at one server.
    pub attempt_timeout: Duration,
    /// The whole call, across servers and retries.
    pub deadline: Duration,
    /// The first pause after every server failed once (it doubles up to 1 s).
    pub retry_pause: Duration,
}

impl Default for KvOptions {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(3),
            deadline: Duration::from_secs(15),
            retry_pause: Duration::from_millis(50),
        }
    }
}

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

/// A KV client bound to a list of servers.
pub struct KvClient {
    servers: Vec<(String, RawKv<Channel>)>,
    /// Index of the server to try first.
    preferred: Mutex<usize>,
    client_id: u64,
    seq: AtomicU64,
    options: KvOptions,
}

impl std::fmt::Debug for KvClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvClient")
            .field("servers", &self.server_list())
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// Parses `A,B,…` into `HOST:PORT` strings, naming the bad element.
pub fn parse_servers(list: &str) -> Result<Vec<String>, KvClientError> {
    let servers: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if servers.is_empty() {
        return Err(KvClientError::BadServers(
            "empty: give at least one HOST:PORT".into(),
        ));
    }
    for s in &servers {
        let port = s.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
        match port {
            Some((h, Ok(p))) if !h.is_empty() && p != 0 => {}
            _ => {
                return Err(KvClientError::BadServers(format!(
                    "`{s}` is not HOST:PORT (port 1-65535)"
                )));
            }
        }
    }
    Ok(servers)
}

/// Whether another server (or a later try) may succeed.
fn retryable(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
            | Code::Internal
            | Code::Unimplemented
    )
}

fn describe(addr: &str, s: &Status) -> String {
    match s.code() {
        Code::Unimplemented => format!("{addr}: does not serve KV (not a manager?)"),
        _ => format!("{addr}: {}", s.message()),
    }
}

fn fence(f: Option<shoal_proto::v1::Fence>) -> Fence {
    f.map_or(Fence::default(), |f| Fence::new(f.term, f.index))
}

impl KvClient {
    /// A client for `servers` (`HOST:PORT` each). Connects lazily; call it from within
    /// a Tokio runtime.
    pub fn new(servers: &[String], options: KvOptions) -> Result<Self, KvClientError> {
        if servers.is_empty() {
            return Err(KvClientError::BadServers(
                "empty: give at least one HOST:PORT".into(),
            ));
        }
        let mut conns = Vec::with_capacity(servers.len());
        for s in servers {
            let channel = Channel::from_shared(format!("http://{s}"))
                .map_err(|e| KvClientError::BadServers(format!("`{s}`: {e}")))?
                .connect_timeout(options.attempt_timeout.min(Duration::from_secs(1)))
                .connect_lazy();
            let raw = RawKv::new(channel)
                .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
            conns.push((s.clone(), raw));
        }
        Ok(Self {
            servers: conns,
            preferred: Mutex::new(0),
            client_id: rand::rng().random_range(1..u64::MAX),
            seq: AtomicU64::new(0),
            options,
        })
    }

    /// This client's id (in every write tag).
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    fn server_list(&self) -> String {
        self.servers
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>()
            .join(",")
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

    /// Runs `call` against the servers in turn until one answers or the deadline.
    async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, KvClientError>
    where
        F: FnMut(RawKv<Channel>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let started = Instant::now();
        let n = self.servers.len();
        let mut at = *self.preferred.lock().unwrap_or_else(|p| p.into_inner());
        let mut pause = None;
        let mut last;
        let mut tried_in_round = 0;
        loop {
            let (addr, client) = &self.servers[at % n];
            let left = self.options.deadline.saturating_sub(started.elapsed());
            let attempt = self.options.attempt_timeout.min(left);
            let result = tokio::time::timeout(attempt, call(client.clone(), attempt)).await;
            match result {
                Ok(Ok(v)) => {
                    *self.preferred.lock().unwrap_or_else(|p| p.into_inner()) = at % n;
                    return Ok(v);
                }
                Ok(Err(s)) if !retryable(&s) => {
                    return Err(KvClientError::Rejected(s.message().to_string()));
                }
                Ok(Err(s)) => last = describe(addr, &s),
                Err(_) => last = format!("{addr}: no answer within {} ms", attempt.as_millis()),
            }
            at += 1;
            tried_in_round += 1;
            if tried_in_round >= n {
                tried_in_round = 0;
                let p = capped_doubling(pause, self.options.retry_pause, Duration::from_secs(1));
                pause = Some(p);
                let left = self.options.deadline.saturating_sub(started.elapsed());
                tokio::time::sleep(p.min(left)).await;
            }
            if started.elapsed() >= self.options.deadline {
                return Err(KvClientError::Unavailable {
                    servers: self.server_list(),
                    waited_ms: started.elapsed().as_millis() as u64,
                    last,
                });
            }
        }
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
        self.call(|mut c, t| {
            let mut req = tonic::Request::new(ListRequest {
                prefix: prefix.to_string(),
                stale,
                limit,
            });
            req.set_timeout(t);
            async move {
                let r = c.list(req).await?.into_inner();
                Ok(Listing {
                    kvs: r.kvs,
                    more: r.more,
                    store_revision: r.store_revision,
                })
            }
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
