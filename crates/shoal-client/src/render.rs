//! The status table, like the predecessor's status monitor, and its verdict line.

use std::fmt::Write;

use shoal_types::{MemberState, status::StatusDoc};

/// `HEALTHY`, or `DEGRADED: n suspect, m failed`; a node run `--insecure` says so.
pub fn verdict(doc: &StatusDoc) -> String {
    let count = |s: MemberState| doc.members.iter().filter(|m| m.state == s).count();
    let (suspect, failed) = (count(MemberState::Suspect), count(MemberState::Failed));
    let health = if suspect == 0 && failed == 0 {
        "HEALTHY".to_string()
    } else {
        format!("DEGRADED: {suspect} suspect, {failed} failed")
    };
    if doc.node.security == "insecure" {
        format!("{health} (INSECURE: plaintext, no authentication)")
    } else {
        health
    }
}

/// Seconds as `45.2s`, `12m03s` or `3h04m`.
pub fn format_uptime(s: f64) -> String {
    let whole = s as u64;
    if s < 60.0 {
        format!("{s:.1}s")
    } else if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h{:02}m", whole / 3600, (whole % 3600) / 60)
    }
}

/// The whole table: header, one row per member, a summary and the verdict.
pub fn status_table(doc: &StatusDoc) -> String {
    let threshold = doc.gossip.as_ref().map_or(8.0, |g| g.phi_threshold);
    let headers = [
        "ID", "ROLE", "DC", "STATE", "LEADER", "LOAD", "CLIENTS", "MESSAGES", "UPTIME", "PHI",
        "ADDR",
    ];
    let rows: Vec<[String; 11]> = doc
        .members
        .iter()
        .map(|m| {
            let id = if m.is_self {
                format!("{}*", m.id)
            } else {
                m.id.clone()
            };
            let phi = if m.is_self {
                "-".to_string()
            } else if m.phi >= threshold {
                format!("{:.1}!", m.phi)
            } else {
                format!("{:.1}", m.phi)
            };
            [
                id,
                or_dash(&m.role),
                or_dash(&m.dc),
                m.state.to_string(),
                m.leader.clone().unwrap_or_default(),
                // Workers: cores in use of cores offered.
                m.used_cores
                    .map_or_else(|| "-".into(), |u| format!("{u}/{}", m.cores)),
                // Managers: chat clients subscribed through it, messages stored.
                m.chat_clients.map_or_else(|| "-".into(), |c| c.to_string()),
                m.chat_messages
                    .map_or_else(|| "-".into(), |c| c.to_string()),
                m.uptime_s.map(format_uptime).unwrap_or_else(|| "-".into()),
                phi,
                m.addr.clone(),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(&mut out, &headers.map(String::from));
    for row in &rows {
        line(&mut out, row);
    }
    let count = |s: MemberState| doc.members.iter().filter(|m| m.state == s).count();
    let _ = writeln!(
        out,
        "{} members seen from {}: {} alive, {} suspect, {} failed, {} left",
        doc.members.len(),
        doc.node.id,
        count(MemberState::Alive),
        count(MemberState::Suspect),
        count(MemberState::Failed),
        count(MemberState::Left),
    );
    let _ = writeln!(out, "{}", verdict(doc));
    out
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use shoal_types::status::{MemberRow, NodeSection};

    use super::*;

    fn row(id: &str, state: MemberState) -> MemberRow {
        MemberRow {
            id: id.into(),
            role: "worker".into(),
            dc: "dc1".into(),
            addr: "127.0.0.1:9200".into(),
            state,
            phi: 0.5,
            tags: Default::default(),
            incarnation: 0,
            uptime_s: Some(75.0),
            leader: None,
            lifecycle: None,
            cores: 0,
            used_cores: None,
            chat_clients: None,
            chat_messages: None,
            version: None,
            is_self: id == "m1",
        }
    }

    fn doc(members: Vec<MemberRow>) -> StatusDoc {
        StatusDoc {
            node: NodeSection {
                id: "m1".into(),
                role: "manager".into(),
                dc: "dc1".into(),
                addr: "127.0.0.1:9000".into(),
                state: "active".into(),
                uptime_s: 1.0,
                version: "0.1.0".into(),
                security: "tls".into(),
            },
            members,
            raft: None,
            gossip: None,
            jobs: None,
            chat: None,
        }
    }

    #[test]
    fn verdict_counts_suspect_and_failed_but_not_left() {
        let healthy = doc(vec![
            row("m1", MemberState::Alive),
            row("w1", MemberState::Left),
        ]);
        assert_eq!(verdict(&healthy), "HEALTHY");
        let degraded = doc(vec![
            row("m1", MemberState::Alive),
            row("w1", MemberState::Suspect),
            row("w2", MemberState::Failed),
            row("w3", MemberState::Failed),
        ]);
        assert_eq!(verdict(&degraded), "DEGRADED: 1 suspect, 2 failed");
        let mut open = degraded.clone();
        open.node.security = "insecure".into();
        assert_eq!(
            verdict(&open),
            "DEGRADED: 1 suspect, 2 failed (INSECURE: plaintext, no authentication)"
        );
    }

    #[test]
    fn table_has_the_monitor_columns() {
        let mut w1 = row("w1", MemberState::Failed);
        w1.cores = 4;
        w1.used_cores = Some(3);
        let mut m1 = row("m1", MemberState::Alive);
        m1.role = "manager".into();
        m1.chat_clients = Some(2);
        m1.chat_messages = Some(15);
        m1.leader = Some("m1".into());
        let t = status_table(&doc(vec![m1, w1]));
        let mut lines = t.lines();
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            [
                "ID", "ROLE", "DC", "STATE", "LEADER", "LOAD", "CLIENTS", "MESSAGES", "UPTIME",
                "PHI", "ADDR"
            ]
        );
        let manager: Vec<&str> = t.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(manager[6..8], ["2", "15"], "a manager's chat columns: {t}");
        assert!(t.contains(" 3/4 "), "a worker's load: {t}");
        assert!(t.contains("m1*"), "the answering node is marked");
        assert!(t.contains("1m15s"));
        assert!(t.trim_end().ends_with("DEGRADED: 0 suspect, 1 failed"));
    }

    #[test]
    fn uptime_formats() {
        assert_eq!(format_uptime(45.24), "45.2s");
        assert_eq!(format_uptime(723.0), "12m03s");
        assert_eq!(format_uptime(11_040.0), "3h04m");
    }
}
