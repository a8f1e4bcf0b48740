//! The admin HTTP API on the node's TCP port.
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/status` | the status document (DESIGN §Status) |
//! | `GET /v1/members` | the member rows alone |
//! | `GET /v1/events` | membership events as server-sent events |
//! | `PUT /v1/tags/{key}` | body: the value (text); sets a tag on this node |
//! | `DELETE /v1/tags/{key}` | removes a tag |
//! | `GET /v1/quorum` | managers: the Raft group — voters, learners, quorum, peers' breakers |
//! | `POST /v1/drain` | managers: hand leadership over, leave the voter set |
//! | `PUT /v1/managers/{id}` | managers: add a live manager (learner → voter) |
//! | `DELETE /v1/managers/{id}` | managers: remove a manager from the group |
//! | `GET /metrics` | Prometheus text |

use std::convert::Infallible;

use crate::consensus::{ChangeError, Consensus};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post, put},
};
use futures_util::Stream;
use serde::Serialize;
use shoal_membership::{MembershipEvent, MembershipHandle};
use shoal_types::limits::TAG_VALUE_BYTES_MAX;
use tokio_stream::StreamExt;

use crate::{
    metrics,
    status::{member_row, status_doc, unix_ms},
};

/// What the admin handlers read: membership, and the Raft group on managers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// `--insecure`: shown in the status document.
    pub insecure: bool,
    pub membership: MembershipHandle,
    pub raft: Option<Consensus>,
    pub dc: String,
    pub jobs: JobsView,
    /// Managers: the `chat` status section.
    pub chat: Option<std::sync::Arc<crate::chat::ChatHub>>,
}

/// Where the `jobs` status section comes from.
#[derive(Clone, Debug)]
pub enum JobsView {
    /// The DC's ledger (as this manager applied it) and gossip.
    Manager(std::sync::Arc<crate::jobs::manager::JobsManager>),
    /// What this worker runs.
    Worker(std::sync::Arc<crate::jobs::worker::WorkerRuntime>),
    /// The jobs this gate placed and the datacenters it routes to.
    Gate(std::sync::Arc<crate::jobs::gate::Gate>),
    None,
}

impl JobsView {
    fn section(&self) -> Option<serde_json::Value> {
        match self {
            JobsView::Manager(m) => Some(m.status_section()),
            JobsView::Worker(w) => {
                let l = w.load();
                Some(serde_json::json!({
                    "running": l.running,
                    "waiting": l.waiting,
                    "used_cores": l.used_cores,
                    "cores": l.cores,
                }))
            }
            JobsView::Gate(g) => Some(g.status_section()),
            JobsView::None => None,
        }
    }
}

/// The admin API over one node.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/members", get(members))
        .route("/v1/events", get(events))
        .route("/v1/tags/{key}", put(set_tag).delete(remove_tag))
        .route("/v1/quorum", get(quorum))
        .route("/v1/drain", post(drain))
        .route("/v1/managers/{id}", put(add_manager).delete(remove_manager))
        .route("/metrics", get(prometheus))
        .fallback(not_found)
        .with_state(state)
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (
        code,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such route; see GET /v1/status, /v1/members, /v1/events, /metrics",
    )
}

async fn status(State(s): State<AppState>) -> Response {
    let snap = s.membership.snapshot();
    let mut doc = status_doc(&snap, unix_ms());
    doc.node.security = if s.insecure { "insecure" } else { "tls" }.into();
    doc.raft = s.raft.as_ref().map(|c| c.quorum_doc(&snap));
    doc.jobs = s.jobs.section();
    doc.chat = s.chat.as_ref().map(|c| c.status_section());
    Json(doc).into_response()
}

/// The 404 that gates and workers answer to manager routes.
fn not_a_manager(s: &AppState) -> Response {
    let snap = s.membership.snapshot();
    let me = &snap.me;
    let role = me
        .role
        .map_or_else(|| "node".to_string(), |r| r.to_string());
    error(
        StatusCode::NOT_FOUND,
        format!(
            "{} is a {role}; the Raft group lives on managers (ask one of them)",
            me.id
        ),
    )
}

#[derive(Serialize)]
struct Done {
    message: String,
}

fn change_result(r: Result<String, ChangeError>) -> Response {
    match r {
        Ok(message) => Json(Done { message }).into_response(),
        Err(e @ ChangeError::Refused(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ ChangeError::NotFound(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ ChangeError::Unavailable(_)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

async fn quorum(State(s): State<AppState>) -> Response {
    let Some(c) = &s.raft else {
        return not_a_manager(&s);
    };
    Json(c.quorum_doc(&s.membership.snapshot())).into_response()
}

async fn drain(State(s): State<AppState>) -> Response {
    let Some(c) = &s.raft else {
        return not_a_manager(&s);
    };
    change_result(c.drain(&s.membership.snapshot()).await)
}

async fn add_manager(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    if let Err(e) = shoal_types::validate_name(&id) {
        return error(StatusCode::BAD_REQUEST, format!("id: {e}"));
    }
    let Some(c) = &s.raft else {
        return not_a_manager(&s);
    };
    change_result(c.add_manager(&s.membership.snapshot(), &id).await)
}

async fn remove_manager(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    if let Err(e) = shoal_types::validate_name(&id) {
        return error(StatusCode::BAD_REQUEST, format!("id: {e}"));
    }
    let Some(c) = &s.raft else {
        return not_a_manager(&s);
    };
    change_result(c.remove_manager(&id).await)
}

async fn members(State(AppState { membership: m, .. }): State<AppState>) -> Response {
    let now = unix_ms();
    let rows: Vec<_> = m
        .snapshot()
        .members
        .iter()
        .map(|x| member_row(x, now))
        .collect();
    Json(rows).into_response()
}

async fn prometheus(State(s): State<AppState>) -> Response {
    let snap = s.membership.snapshot();
    let raft = s.raft.as_ref().map(|c| c.figures(&snap));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&snap, raft.as_ref()),
    )
        .into_response()
}

/// One event on the wire: the event plus when this node saw it.
#[derive(Serialize)]
struct WireEvent<'a> {
    ts_unix_ms: u64,
    #[serde(flatten)]
    event: &'a MembershipEvent,
}

async fn events(
    State(AppState { membership: m, .. }): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = m.events().map(|e| {
        let body = WireEvent {
            ts_unix_ms: unix_ms(),
            event: &e,
        };
        let event = Event::default()
            .event(format!("{:?}", e.kind))
            .json_data(&body)
            .unwrap_or_else(|_| Event::default().comment("unencodable event"));
        Ok(event)
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn set_tag(
    State(AppState { membership: m, .. }): State<AppState>,
    Path(key): Path<String>,
    body: String,
) -> Response {
    if body.len() > TAG_VALUE_BYTES_MAX {
        return error(
            StatusCode::BAD_REQUEST,
            format!("tag `{key}`: value must be at most {TAG_VALUE_BYTES_MAX} bytes"),
        );
    }
    match m.set_tag(&key, &body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn remove_tag(
    State(AppState { membership: m, .. }): State<AppState>,
    Path(key): Path<String>,
) -> Response {
    match m.remove_tag(&key).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("tag `{key}` is not set on this node"),
        ),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}
