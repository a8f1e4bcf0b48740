//! A small HTTP/1.1 client for a node's admin API.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
pub use hyper::Method;
use hyper::{
    Request, StatusCode,
    body::{Body, Incoming},
};
use hyper_util::rt::TokioIo;
use shoal_security::Credentials;
use shoal_types::status::StatusDoc;

/// Why a request failed; `Unreachable` means nothing answered at all.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach a shoal node at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("{addr} answered {status}: {message}")]
    Status {
        addr: String,
        status: u16,
        message: String,
    },
    #[error("{addr}: bad response: {reason}")]
    BadResponse { addr: String, reason: String },
}

/// Talks to one node's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    addr: String,
    timeout: Duration,
    creds: Credentials,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

impl AdminClient {
    /// `addr` is `HOST:PORT` of the node's TCP port.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            timeout: DEFAULT_TIMEOUT,
            creds: Credentials::insecure(),
        }
    }

    /// How to connect (plaintext or TLS against the cluster CA) and the token to send.
    pub fn with_credentials(mut self, creds: Credentials) -> Self {
        self.creds = creds;
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub async fn status(&self) -> Result<StatusDoc, ClientError> {
        let body = self.call(Method::GET, "/v1/status", None).await?;
        serde_json::from_slice(&body).map_err(|e| self.bad(e.to_string()))
    }

    /// The body of a GET, as text (e.g. `/metrics`).
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let body = self.call(Method::GET, path, None).await?;
        String::from_utf8(body.to_vec()).map_err(|e| self.bad(e.to_string()))
    }

    pub async fn set_tag(&self, key: &str, value: &str) -> Result<(), ClientError> {
        let path = format!("/v1/tags/{}", encode_path(key));
        self.call(Method::PUT, &path, Some(value.as_bytes().to_vec()))
            .await
            .map(drop)
    }

    pub async fn remove_tag(&self, key: &str) -> Result<(), ClientError> {
        let path = format!("/v1/tags/{}", encode_path(key));
        self.call(Method::DELETE, &path, None).await.map(drop)
    }

    /// `GET /v1/quorum` of a manager: its Raft group.
    pub async fn quorum(&self) -> Result<serde_json::Value, ClientError> {
        self.json(Method::GET, "/v1/quorum").await
    }

    /// `POST /v1/drain`: the manager hands over leadership and leaves the voter set.
    /// Returns the node's message.
    pub async fn drain(&self) -> Result<String, ClientError> {
        self.message(Method::POST, "/v1/drain").await
    }

    /// `PUT /v1/managers/{id}`: adds a live manager to the group (learner → voter).
    pub async fn add_manager(&self, id: &str) -> Result<String, ClientError> {
        let path = format!("/v1/managers/{}", encode_path(id));
        self.message(Method::PUT, &path).await
    }

    /// `DELETE /v1/managers/{id}`: removes a manager from the group.
    pub async fn remove_manager(&self, id: &str) -> Result<String, ClientError> {
        let path = format!("/v1/managers/{}", encode_path(id));
        self.message(Method::DELETE, &path).await
    }

    async fn json(&self, method: Method, path: &str) -> Result<serde_json::Value, ClientError> {
        self.request_json(method, path, None).await
    }

    /// Any JSON route: `method path` with an optional JSON body, answered with JSON
    /// (`null` for an empty answer).
    pub async fn request_json(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let body = body.map(|b| b.to_string().into_bytes());
        let bytes = self.call(method, path, body).await?;
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| self.bad(e.to_string()))
    }

    async fn message(&self, method: Method, path: &str) -> Result<String, ClientError> {
        let v = self.json(method, path).await?;
        Ok(v["message"].as_str().unwrap_or_default().to_string())
    }

    /// Follows `/v1/events`, calling `on_event` with each event's JSON until the node
    /// closes the stream or `on_event` returns false.
    pub async fn follow_events(
        &self,
        mut on_event: impl FnMut(serde_json::Value) -> bool,
    ) -> Result<(), ClientError> {
        let mut response = self.send(Method::GET, "/v1/events", None).await?;
        let mut pending = String::new();
        while let Some(frame) = response.frame().await {
            let frame = frame.map_err(|e| self.unreachable(e.to_string()))?;
            let Some(chunk) = frame.data_ref() else {
                continue;
            };
            pending.push_str(&String::from_utf8_lossy(chunk));
            while let Some(end) = pending.find("\n\n") {
                let block: String = pending.drain(..end + 2).collect();
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue;
                }
                let value = serde_json::from_str(&data).map_err(|e| self.bad(e.to_string()))?;
                if !on_event(value) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let work = async {
            let response = self.send(method, path, body).await?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| self.unreachable(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(self.status_error(status, &bytes));
            }
            Ok(bytes)
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| self.unreachable(format!("no answer within {:?}", self.timeout)))?
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let addr = self.resolve().await?;
        let addr = addr.to_string();
        let connect = self.creds.transport.connect(&addr);
        let stream = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| self.unreachable("connect timed out".into()))?
            .map_err(|e| self.unreachable(self.with_hint(e.to_string())))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.addr.as_str());
        if let Some(bearer) = self.creds.bearer() {
            request = request.header(hyper::header::AUTHORIZATION, bearer);
        }
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = match body {
            Some(b) => request.body(boxed(Full::new(Bytes::from(b)))),
            None => request.body(boxed(Empty::<Bytes>::new())),
        }
        .map_err(|e| self.bad(e.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(self.with_hint(e.to_string())))
    }

    /// A failure that a plaintext/TLS mismatch explains gets the fix appended.
    fn with_hint(&self, reason: String) -> String {
        if self.creds.transport.is_tls() {
            if reason.contains("corrupt message") || reason.contains("InvalidContentType") {
                return format!(
                    "{reason} (the node does not speak TLS: is it running --insecure?)"
                );
            }
            return reason;
        }
        let lower = reason.to_lowercase();
        if lower.contains("invalid http version")
            || lower.contains("parse")
            || lower.contains("closed before message completed")
        {
            return format!(
                "{reason} (the node may serve TLS: give --ca FILE or SHOAL_TLS_DIR, and a token)"
            );
        }
        reason
    }

    async fn resolve(&self) -> Result<SocketAddr, ClientError> {
        tokio::net::lookup_host(self.addr.as_str())
            .await
            .map_err(|e| self.unreachable(e.to_string()))?
            .next()
            .ok_or_else(|| self.unreachable("address resolves to nothing".into()))
    }

    fn unreachable(&self, reason: String) -> ClientError {
        ClientError::Unreachable {
            addr: self.addr.clone(),
            reason,
        }
    }

    fn bad(&self, reason: String) -> ClientError {
        ClientError::BadResponse {
            addr: self.addr.clone(),
            reason,
        }
    }

    fn status_error(&self, status: StatusCode, body: &[u8]) -> ClientError {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        ClientError::Status {
            addr: self.addr.clone(),
            status: status.as_u16(),
            message,
        }
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn boxed<B>(body: B) -> BoxBody
where
    B: Body<Data = Bytes, Error = std::convert::Infallible> + Send + Sync + 'static,
{
    body.boxed()
}

/// Percent-encodes what is not safe in a path segment.
fn encode_path(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
