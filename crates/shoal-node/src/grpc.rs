//! gRPC services on the node's TCP port (beside the admin HTTP routes).
//!
//! `Cluster`: membership as this node sees it, and a stream of membership events — the
//! gRPC twin of `/v1/status` and `/v1/events`, for clients in any language.
//! Managers add `Raft` (internal, among managers) and `Kv` (the replicated store).

use std::pin::Pin;

use futures_util::Stream;
use shoal_membership::{MemberInfo, MembershipEvent as Event, MembershipHandle};
use shoal_proto::v1::chat_server::ChatServer;
use shoal_proto::v1::jobs_server::JobsServer;
use shoal_proto::v1::kv_server::KvServer;
use shoal_proto::v1::raft_server::RaftServer;
use shoal_proto::v1::worker_reports_server::WorkerReportsServer;
use shoal_proto::v1::worker_server::WorkerServer;
use shoal_proto::{
    GRPC_MESSAGE_BYTES_MAX,
    v1::{
        Member, MembersRequest, MembersResponse, MembershipEvent, WatchEventsRequest,
        cluster_server::{Cluster, ClusterServer},
    },
};
use shoal_raft::group::{
    Replica,
    grpc::{Identity, RaftService},
};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, server::NamedService};

use crate::{jobs, status::unix_ms};

/// The gRPC routes every node serves, one path prefix per service (`/shoal.v1.Cluster/…`).
/// They carry no fallback of their own, so they merge into the admin router, whose
/// fallback answers unknown HTTP paths with a JSON 404.
pub fn routes(membership: MembershipHandle, role: RoleServices) -> axum::Router {
    let cluster = ClusterServer::new(ClusterService { membership })
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
    let router = axum::Router::new()
        .route_service(&service_path::<ClusterServer<ClusterService>>(), cluster);
    match role {
        RoleServices::Manager(m) => {
            let ManagerServices {
                replica,
                identity,
                jobs,
                chat,
            } = *m;
            let raft = shoal_raft::group::grpc::service(replica.group.clone(), identity);
            let kv = crate::kv::service(replica);
            router
                .route_service(&service_path::<RaftServer<RaftService>>(), raft)
                .route_service(&service_path::<KvServer<crate::kv::KvService>>(), kv)
                .route_service(
                    &service_path::<ChatServer<crate::chat::ChatService>>(),
                    crate::chat::service(chat),
                )
                .route_service(
                    &service_path::<JobsServer<jobs::service::JobsService>>(),
                    jobs::service::jobs_service(jobs.clone()),
                )
                .route_service(
                    &service_path::<WorkerReportsServer<jobs::service::ReportsService>>(),
                    jobs::service::reports_service(jobs),
                )
                .layer(axum::middleware::map_response(oversized_is_invalid))
        }
        RoleServices::Gate(g) => {
            let GateServices {
                replica,
                identity,
                gate,
            } = *g;
            let raft = shoal_raft::group::grpc::service(replica.group.clone(), identity);
            router
                .route_service(&service_path::<RaftServer<RaftService>>(), raft)
                .route_service(
                    &service_path::<JobsServer<jobs::gate::GateJobs>>(),
                    jobs::gate::service(gate),
                )
        }
        RoleServices::Worker(rt) => router.route_service(
            &service_path::<WorkerServer<jobs::worker::WorkerService>>(),
            jobs::worker::service(rt),
        ),
        RoleServices::None => router,
    }
}

/// What a manager serves with.
pub struct ManagerServices {
    pub replica: Replica,
    pub identity: Identity,
    pub jobs: std::sync::Arc<jobs::manager::JobsManager>,
    pub chat: std::sync::Arc<crate::chat::ChatHub>,
}

/// What a gate serves with.
pub struct GateServices {
    pub replica: Replica,
    pub identity: Identity,
    pub gate: std::sync::Arc<jobs::gate::Gate>,
}

/// The gRPC services a node serves beyond `Cluster`, by role.
pub enum RoleServices {
    /// Raft, KV, Jobs, the workers' reports and Chat.
    Manager(Box<ManagerServices>),
    /// Raft among the gates, and Jobs across datacenters.
    Gate(Box<GateServices>),
    /// Orders from the manager leader.
    Worker(std::sync::Arc<jobs::worker::WorkerRuntime>),
    None,
}

/// tonic refuses a request over the message limit with OUT_OF_RANGE before any handler
/// runs; to a client that is bad input like any other: INVALID_ARGUMENT naming the limit.
async fn oversized_is_invalid(mut res: axum::response::Response) -> axum::response::Response {
    let headers = res.headers_mut();
    let out_of_range = headers.get("grpc-status").is_some_and(|v| v == "11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| m.contains("too") && m.contains("large"));
    if out_of_range && too_large {
        let message = format!(
            "request: larger than the {GRPC_MESSAGE_BYTES_MAX}-byte message limit (key at most {} bytes, value at most {} bytes)",
            shoal_state::kv::KEY_BYTES_MAX,
            shoal_state::kv::VALUE_BYTES_MAX
        );
        headers.insert("grpc-status", axum::http::HeaderValue::from_static("3"));
        if let Ok(v) = axum::http::HeaderValue::from_str(&message) {
            headers.insert("grpc-message", v);
        }
    }
    res
}

fn service_path<S: NamedService>() -> String {
    format!("/{}/{{*method}}", S::NAME)
}

struct ClusterService {
    membership: MembershipHandle,
}

fn member(m: &MemberInfo) -> Member {
    Member {
        id: m.id.clone(),
        role: m.role.map(|r| r.to_string()).unwrap_or_default(),
        dc: m.dc.clone().unwrap_or_default(),
        addr: m.addr.clone(),
        state: m.state.to_string(),
        phi: m.phi,
        tags: m.tags.clone().into_iter().collect(),
        incarnation: m.incarnation.into(),
        is_self: m.is_self,
    }
}

fn event(e: &Event) -> MembershipEvent {
    MembershipEvent {
        kind: format!("{:?}", e.kind),
        member: Some(member(&e.member)),
        ts_unix_ms: unix_ms(),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<MembershipEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn members(
        &self,
        _request: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        let snap = self.membership.snapshot();
        Ok(Response::new(MembersResponse {
            node_id: snap.me.id.clone(),
            members: snap.members.iter().map(member).collect(),
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        _request: Request<WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let stream = self.membership.events().map(|e| Ok(event(&e)));
        Ok(Response::new(Box::pin(stream)))
    }
}
