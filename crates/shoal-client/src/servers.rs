//! Calls with failover over a list of servers, shared by the KV and jobs clients.
//!
//! Each call goes to the server that answered last; when it cannot be reached, has no
//! leader, or the outcome of a write is unknown, the call moves to the next server
//! (pausing with capped doubling after each full round) until the call's deadline.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use shoal_security::{AuthChannel, Credentials};
use shoal_types::backoff::capped_doubling;
use tonic::{Code, Status};

/// Why a call to a server list failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
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

/// Timeouts of a client over a server list.
#[derive(Debug, Clone, Copy)]
pub struct CallOptions {
    /// One attempt at one server.
    pub attempt_timeout: Duration,
    /// The whole call, across servers and retries.
    pub deadline: Duration,
    /// The first pause after every server failed once (it doubles up to 1 s).
    pub retry_pause: Duration,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(3),
            deadline: Duration::from_secs(15),
            retry_pause: Duration::from_millis(50),
        }
    }
}

/// Clients of type `C` for each server, and which one answered last.
pub struct Servers<C> {
    servers: Vec<(String, C)>,
    /// Index of the server to try first.
    preferred: Mutex<usize>,
    options: CallOptions,
}

impl<C: Clone> Servers<C> {
    /// A client per server (`HOST:PORT` each) made by `make` on a lazily connecting
    /// channel that carries `creds` (TLS against the cluster CA, the token). Call it
    /// from within a Tokio runtime.
    pub fn connect(
        servers: &[String],
        options: CallOptions,
        creds: &Credentials,
        make: impl Fn(AuthChannel) -> C,
    ) -> Result<Self, CallError> {
        if servers.is_empty() {
            return Err(CallError::BadServers(
                "empty: give at least one HOST:PORT".into(),
            ));
        }
        let mut conns = Vec::with_capacity(servers.len());
        for s in servers {
            let channel = creds
                .transport
                .endpoint(s)
                .map_err(CallError::BadServers)?
                .connect_timeout(options.attempt_timeout.min(Duration::from_secs(1)))
                .connect_lazy();
            let channel =
                tonic::service::interceptor::InterceptedService::new(channel, creds.interceptor());
            conns.push((s.clone(), make(channel)));
        }
        Ok(Self {
            servers: conns,
            preferred: Mutex::new(0),
            options,
        })
    }

    /// `A,B,…`
    pub fn list(&self) -> String {
        self.servers
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How many servers there are.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Server `i` (modulo the count): its address and client.
    pub fn server(&self, i: usize) -> (&str, C) {
        let (addr, c) = &self.servers[i % self.servers.len()];
        (addr, c.clone())
    }

    /// The server that answered last.
    pub fn preferred(&self) -> usize {
        *self.preferred.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn options(&self) -> CallOptions {
        self.options
    }

    /// Runs `call` against the servers in turn until one answers or the deadline. A
    /// status that retrying cannot fix ends the call at once as `Rejected`.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, CallError>
    where
        F: FnMut(C, Duration) -> Fut,
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
                    return Err(CallError::Rejected(s.message().to_string()));
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
                return Err(CallError::Unavailable {
                    servers: self.list(),
                    waited_ms: started.elapsed().as_millis() as u64,
                    last,
                });
            }
        }
    }
}

/// Parses `A,B,…` into `HOST:PORT` strings, naming the bad element.
pub fn parse_servers(list: &str) -> Result<Vec<String>, CallError> {
    let servers: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if servers.is_empty() {
        return Err(CallError::BadServers(
            "empty: give at least one HOST:PORT".into(),
        ));
    }
    for s in &servers {
        let port = s.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
        match port {
            Some((h, Ok(p))) if !h.is_empty() && p != 0 => {}
            _ => {
                return Err(CallError::BadServers(format!(
                    "`{s}` is not HOST:PORT (port 1-65535)"
                )));
            }
        }
    }
    Ok(servers)
}

/// Whether another server (or a later try) may succeed.
pub(crate) fn retryable(s: &Status) -> bool {
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
        Code::Unimplemented => format!("{addr}: does not serve this API (not a manager?)"),
        _ => format!("{addr}: {}", s.message()),
    }
}
