//! Prometheus text exposition of the membership counters.
//!
//! Rendered from the node's own snapshot rather than the process-global `metrics`
//! recorder: tests run several nodes in one process, and a global recorder would mix
//! their counters.

use std::fmt::Write;

use shoal_membership::{Snapshot, wire::DropReason};
use shoal_types::MemberState;

/// One metric family: name, type, help, and (labels, value) rows.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    rows: Vec<(String, f64)>,
}

fn single(name: &'static str, kind: &'static str, help: &'static str, v: f64) -> Family {
    Family {
        name,
        kind,
        help,
        rows: vec![(String::new(), v)],
    }
}

fn labelled<T>(
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    label: &str,
    items: impl IntoIterator<Item = T>,
    row: impl Fn(&T) -> (String, f64),
) -> Family {
    let rows = items
        .into_iter()
        .map(|item| {
            let (value, v) = row(&item);
            (format!("{{{label}=\"{value}\"}}"), v)
        })
        .collect();
    Family {
        name,
        kind,
        help,
        rows,
    }
}

/// The Raft figures of a manager.
pub struct RaftFigures {
    pub term: u64,
    pub is_leader: bool,
    pub commit_index: u64,
    pub applied_index: u64,
    pub voters: usize,
    /// (peer, breaker state: 0 closed, 1 half-open, 2 open)
    pub breakers: Vec<(String, u8)>,
}

pub fn render(snap: &Snapshot, raft: Option<&RaftFigures>) -> String {
    let s = &snap.stats;
    let states = [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Failed,
        MemberState::Left,
    ];
    let counters: [(&'static str, &'static str, u64); 9] = [
        (
            "shoal_gossip_probes_sent_total",
            "Direct probes sent.",
            s.probes_sent,
        ),
        (
            "shoal_gossip_probes_failed_total",
            "Probes that got no ack, direct or indirect.",
            s.probes_failed,
        ),
        (
            "shoal_gossip_suspicions_raised_total",
            "Suspicions this node raised.",
            s.suspicions_raised,
        ),
        (
            "shoal_gossip_suspicions_refuted_total",
            "Suspicions this node raised that the member refuted.",
            s.suspicions_refuted,
        ),
        (
            "shoal_gossip_packets_in_total",
            "Datagrams received.",
            s.packets_in,
        ),
        (
            "shoal_gossip_packets_out_total",
            "Datagrams sent.",
            s.packets_out,
        ),
        (
            "shoal_gossip_bytes_in_total",
            "Gossip bytes received.",
            s.bytes_in,
        ),
        (
            "shoal_gossip_bytes_out_total",
            "Gossip bytes sent.",
            s.bytes_out,
        ),
        (
            "shoal_gossip_timers_late_total",
            "Timer rounds that ran late (local health signal).",
            s.timers_late,
        ),
    ];
    let mut families = vec![labelled(
        "shoal_members",
        "gauge",
        "Known members by state, this node included.",
        "state",
        states,
        |st| (st.to_string(), snap.count(*st) as f64),
    )];
    families.extend(
        counters
            .into_iter()
            .map(|(name, help, v)| single(name, "counter", help, v as f64)),
    );
    families.push(labelled(
        "shoal_gossip_packets_dropped_total",
        "counter",
        "Inbound packets dropped, by reason.",
        "reason",
        DropReason::ALL,
        |r| {
            let v = s.dropped.get(r.as_str()).copied().unwrap_or(0);
            (r.as_str().to_string(), v as f64)
        },
    ));
    families.push(single(
        "shoal_gossip_awareness",
        "gauge",
        "Lifeguard local health score (0 healthy .. 8).",
        snap.awareness as f64,
    ));
    families.push(labelled(
        "shoal_member_phi",
        "gauge",
        "Phi accrual suspicion level per member.",
        "member",
        snap.members.iter().filter(|m| !m.is_self),
        |m| (m.id.clone(), m.phi),
    ));
    if let Some(r) = raft {
        families.push(single(
            "shoal_raft_term",
            "gauge",
            "Current Raft term.",
            r.term as f64,
        ));
        families.push(single(
            "shoal_raft_is_leader",
            "gauge",
            "1 if this manager leads its group.",
            f64::from(u8::from(r.is_leader)),
        ));
        families.push(single(
            "shoal_raft_commit_index",
            "gauge",
            "Highest log index known committed.",
            r.commit_index as f64,
        ));
        families.push(single(
            "shoal_raft_applied_index",
            "gauge",
            "Highest log index applied to the state machine here.",
            r.applied_index as f64,
        ));
        families.push(single(
            "shoal_raft_voters",
            "gauge",
            "Voters in the group.",
            r.voters as f64,
        ));
        families.push(labelled(
            "shoal_raft_peer_breaker_state",
            "gauge",
            "Circuit breaker toward each Raft peer: 0 closed, 1 half-open, 2 open.",
            "peer",
            &r.breakers,
            |(p, v)| (p.clone(), f64::from(*v)),
        ));
    }
    let mut out = String::with_capacity(4096);
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (labels, v) in f.rows {
            let _ = writeln!(out, "{}{labels} {v}", f.name);
        }
    }
    out
}
