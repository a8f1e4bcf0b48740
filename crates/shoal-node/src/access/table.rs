//! The one table of what each route needs: every gRPC method and HTTP route of a node.
//!
//! Anything not listed needs `admin` (a method added without a row here is closed, not
//! open). `exec` is not a route: `Jobs.Submit` needs `write`, and the service asks for
//! `exec` when the job's workflow runs commands.

use axum::http::Method;
use shoal_types::Perm;

/// What a request must come with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A certificate of the cluster CA naming a node (internal RPCs).
    Node,
    /// A client (or node) holding this permission.
    Perm(Perm),
}

/// gRPC methods by service: (method, what it needs). Services are `shoal.v1.<name>`.
const GRPC: &[(&str, &[(&str, Need)])] = {
    use Need::{Node, Perm as P};
    use Perm::{Read, Write};
    &[
        ("Raft", &[("*", Node)]),
        ("Worker", &[("*", Node)]),
        ("WorkerReports", &[("*", Node)]),
        ("Cluster", &[("Members", P(Read)), ("WatchEvents", P(Read))]),
        (
            "Kv",
            &[
                ("Get", P(Read)),
                ("List", P(Read)),
                ("Put", P(Write)),
                ("Delete", P(Write)),
                ("Cas", P(Write)),
            ],
        ),
        (
            "Jobs",
            &[
                ("Get", P(Read)),
                ("List", P(Read)),
                ("Watch", P(Read)),
                ("Logs", P(Read)),
                ("Submit", P(Write)),
                ("Cancel", P(Write)),
            ],
        ),
        (
            "Chat",
            &[
                ("ListRooms", P(Read)),
                ("History", P(Read)),
                ("Subscribe", P(Read)),
                ("CreateRoom", P(Write)),
                ("Join", P(Write)),
                ("Leave", P(Write)),
                ("Post", P(Write)),
            ],
        ),
    ]
};

/// HTTP routes: (method, path prefix, what it needs). The first match wins.
const HTTP: &[(Method, &str, Need)] = &[
    (Method::GET, "/v1/internal/", Need::Node),
    (Method::GET, "/v1/tokens", Need::Perm(Perm::Admin)),
    (Method::GET, "/v1/keys", Need::Perm(Perm::Admin)),
    (Method::GET, "/", Need::Perm(Perm::Read)),
    (Method::HEAD, "/", Need::Perm(Perm::Read)),
];

/// What a request for `path` with `method` needs.
pub fn need(method: &Method, path: &str) -> Need {
    if let Some(rest) = path.strip_prefix("/shoal.v1.") {
        let (service, method) = rest.split_once('/').unwrap_or((rest, ""));
        let methods = GRPC.iter().find(|(s, _)| *s == service).map(|(_, m)| *m);
        return methods
            .and_then(|m| m.iter().find(|(name, _)| *name == "*" || *name == method))
            .map_or(Need::Perm(Perm::Admin), |(_, need)| *need);
    }
    HTTP.iter()
        .find(|(m, prefix, _)| m == method && path.starts_with(prefix))
        .map_or(Need::Perm(Perm::Admin), |(_, _, need)| *need)
}

/// A few words for a refusal: `Kv.Put`, `PUT /v1/tags/x`.
pub fn describe(method: &Method, path: &str) -> String {
    match path.strip_prefix("/shoal.v1.") {
        Some(rpc) => rpc.replace('/', "."),
        None => format!("{method} {path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_admin_are_told_apart() {
        let g = |p: &str| need(&Method::POST, p);
        assert_eq!(g("/shoal.v1.Kv/Get"), Need::Perm(Perm::Read));
        assert_eq!(g("/shoal.v1.Kv/Put"), Need::Perm(Perm::Write));
        assert_eq!(g("/shoal.v1.Jobs/Submit"), Need::Perm(Perm::Write));
        assert_eq!(g("/shoal.v1.Raft/AppendEntries"), Need::Node);
        assert_eq!(g("/shoal.v1.Worker/Run"), Need::Node);
        assert_eq!(g("/shoal.v1.WorkerReports/Report"), Need::Node);
        // Unlisted methods and services are closed.
        assert_eq!(g("/shoal.v1.Kv/Compact"), Need::Perm(Perm::Admin));
        assert_eq!(g("/shoal.v1.Secret/Thing"), Need::Perm(Perm::Admin));
        assert_eq!(need(&Method::GET, "/v1/status"), Need::Perm(Perm::Read));
        assert_eq!(need(&Method::GET, "/metrics"), Need::Perm(Perm::Read));
        assert_eq!(need(&Method::GET, "/v1/tokens"), Need::Perm(Perm::Admin));
        assert_eq!(need(&Method::GET, "/v1/keys"), Need::Perm(Perm::Admin));
        assert_eq!(need(&Method::POST, "/v1/keys"), Need::Perm(Perm::Admin));
        assert_eq!(need(&Method::GET, "/v1/internal/token/ab"), Need::Node);
        for (m, p) in [
            (Method::PUT, "/v1/tags/x"),
            (Method::DELETE, "/v1/tags/x"),
            (Method::POST, "/v1/drain"),
            (Method::PUT, "/v1/managers/m4"),
            (Method::DELETE, "/v1/managers/m4"),
            (Method::POST, "/v1/tokens"),
            (Method::DELETE, "/v1/tokens/ci"),
        ] {
            assert_eq!(need(&m, p), Need::Perm(Perm::Admin), "{m} {p}");
        }
        assert_eq!(describe(&Method::POST, "/shoal.v1.Kv/Put"), "Kv.Put");
    }
}
