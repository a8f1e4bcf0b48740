//! Prometheus text exposition of the membership counters.
//!
//! Rendered from the node's own snapshot rather than the process-global `metrics`
//! recorder: tests run several nodes in one process, and a global recorder would mix
//! their counters.

use std::fmt::Write;

use shoal_membership::{Snapshot, wire::DropReason};
use shoal_types::MemberState;

pub fn render(snap: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let s = &snap.stats;
    let mut family = |name: &str, kind: &str, help: &str, rows: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let states = [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Failed,
        MemberState::Left,
    ];
    let by_state: Vec<(String, f64)> = states
        .iter()
        .map(|st| (format!("{{state=\"{st}\"}}"), snap.count(*st) as f64))
        .collect();
    family(
        "shoal_members",
        "gauge",
        "Known members by state, this node included.",
        &by_state,
    );
    let plain = |v: u64| vec![(String::new(), v as f64)];
    family(
        "shoal_gossip_probes_sent_total",
        "counter",
        "Direct probes sent.",
        &plain(s.probes_sent),
    );
    family(
        "shoal_gossip_probes_failed_total",
        "counter",
        "Probes that got no ack, direct or indirect.",
        &plain(s.probes_failed),
    );
    family(
        "shoal_gossip_suspicions_raised_total",
        "counter",
        "Suspicions this node raised.",
        &plain(s.suspicions_raised),
    );
    family(
        "shoal_gossip_suspicions_refuted_total",
        "counter",
        "Suspicions this node raised that the member refuted.",
        &plain(s.suspicions_refuted),
    );
    let dropped: Vec<(String, f64)> = DropReason::ALL
        .iter()
        .map(|r| {
            let v = s.dropped.get(r.as_str()).copied().unwrap_or(0);
            (format!("{{reason=\"{}\"}}", r.as_str()), v as f64)
        })
        .collect();
    family(
        "shoal_gossip_packets_dropped_total",
        "counter",
        "Inbound packets dropped, by reason.",
        &dropped,
    );
    family(
        "shoal_gossip_packets_in_total",
        "counter",
        "Datagrams received.",
        &plain(s.packets_in),
    );
    family(
        "shoal_gossip_packets_out_total",
        "counter",
        "Datagrams sent.",
        &plain(s.packets_out),
    );
    family(
        "shoal_gossip_bytes_in_total",
        "counter",
        "Gossip bytes received.",
        &plain(s.bytes_in),
    );
    family(
        "shoal_gossip_bytes_out_total",
        "counter",
        "Gossip bytes sent.",
        &plain(s.bytes_out),
    );
    family(
        "shoal_gossip_timers_late_total",
        "counter",
        "Timer rounds that ran late (local health signal).",
        &plain(s.timers_late),
    );
    family(
        "shoal_gossip_awareness",
        "gauge",
        "Lifeguard local health score (0 healthy .. 8).",
        &[(String::new(), snap.awareness as f64)],
    );
    let phis: Vec<(String, f64)> = snap
        .members
        .iter()
        .filter(|m| !m.is_self)
        .map(|m| (format!("{{member=\"{}\"}}", m.id), m.phi))
        .collect();
    family(
        "shoal_member_phi",
        "gauge",
        "Phi accrual suspicion level per member.",
        &phis,
    );
    out
}
