//! One log line per change of this member's place in its Raft group, instead of Raft's
//! own account of every tick: a follower cut off from its leader logs "no leader" once,
//! and one line when a leader is back, with how long it took and how many terms were
//! started meanwhile. openraft itself logs at error only by default (see
//! docs/operations.md, Logs).

use std::time::Instant;

use shoal_raft::group::GroupStatus;

/// Where this member stands: its effective role and the leader it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    role: &'static str,
    leader: Option<u64>,
}

/// A line to log, and whether it is a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub warn: bool,
    pub text: String,
}

/// Remembers the last place seen; [`RoleLog::observe`] says what changed.
#[derive(Debug, Default)]
pub struct RoleLog {
    last: Option<Place>,
    /// Since when no leader is known, and the term then.
    leaderless: Option<(Instant, u64)>,
}

impl RoleLog {
    /// Looks at `s` (taken at `now`); a line when the place changed. `name` turns a Raft
    /// id into a node id.
    pub fn observe(
        &mut self,
        s: &GroupStatus,
        now: Instant,
        name: impl Fn(u64) -> String,
    ) -> Option<Line> {
        if s.voters.is_empty() && s.learners.is_empty() {
            return None; // not part of a formed group yet
        }
        let place = if s.quorum_lost {
            Place {
                role: "leader_no_quorum",
                leader: None,
            }
        } else {
            Place {
                role: s.role,
                leader: s.leader,
            }
        };
        if self.last.as_ref() == Some(&place) {
            return None;
        }
        let was_leaderless = self.leaderless;
        let first = self.last.is_none();
        self.last = Some(place.clone());
        let line = |warn: bool, text: String| Some(Line { warn, text });
        match (place.role, place.leader) {
            ("leader_no_quorum", _) => {
                self.leaderless.get_or_insert((now, s.term));
                line(
                    true,
                    format!(
                        "raft: leader of term {} without a majority's acknowledgement for {} ms; taking no writes until one answers or a newer leader takes over",
                        s.term,
                        s.millis_since_quorum_ack.unwrap_or(0)
                    ),
                )
            }
            (_, None) => {
                self.leaderless.get_or_insert((now, s.term));
                if was_leaderless.is_some() && !first {
                    // Still leaderless (a candidate now, say): the line when a leader is
                    // back says how long it took.
                    return None;
                }
                line(
                    !first,
                    format!(
                        "raft: no leader known in term {} ({}); elections will be tried until a majority answers",
                        s.term, s.role
                    ),
                )
            }
            (role, Some(leader)) => {
                self.leaderless = None;
                let who = if role == "leader" && leader == s.id {
                    format!("leading term {}", s.term)
                } else {
                    format!("following {} in term {}", name(leader), s.term)
                };
                let after = was_leaderless.map_or(String::new(), |(since, term)| {
                    format!(
                        " after {:.1} s without a leader ({} new term{} started meanwhile)",
                        now.saturating_duration_since(since).as_secs_f64(),
                        s.term.saturating_sub(term),
                        if s.term.saturating_sub(term) == 1 {
                            ""
                        } else {
                            "s"
                        }
                    )
                });
                line(false, format!("raft: {who}{after}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn status(role: &'static str, leader: Option<u64>, term: u64) -> GroupStatus {
        GroupStatus {
            id: 1,
            term,
            leader,
            role,
            commit_index: 0,
            cluster_commit_index: 0,
            applied_index: 0,
            last_log_index: 0,
            snapshot_index: 0,
            purged_index: 0,
            voters: vec![1, 2, 3],
            learners: vec![],
            joint: false,
            matched: Default::default(),
            millis_since_quorum_ack: None,
            quorum_lost: false,
        }
    }

    fn name(id: u64) -> String {
        format!("m{id}")
    }

    #[test]
    fn a_cut_off_follower_logs_once_then_once_when_a_leader_is_back() {
        let mut log = RoleLog::default();
        let t0 = Instant::now();
        let first = log.observe(&status("follower", Some(2), 3), t0, name);
        assert_eq!(
            first.map(|l| l.text),
            Some("raft: following m2 in term 3".into())
        );
        assert_eq!(log.observe(&status("follower", Some(2), 3), t0, name), None);

        let lost = log
            .observe(&status("follower", None, 3), t0, name)
            .expect("a line when the leader is lost");
        assert!(lost.warn);
        assert!(
            lost.text.contains("no leader known in term 3"),
            "{}",
            lost.text
        );
        // Every tick and every failed election after that: nothing.
        for tick in 1..=100u64 {
            let (role, term) = if tick % 2 == 0 {
                ("candidate", 3 + tick / 2)
            } else {
                ("follower", 3 + tick / 2)
            };
            let t = t0 + Duration::from_millis(10 * tick);
            assert_eq!(log.observe(&status(role, None, term), t, name), None);
        }
        let back = log
            .observe(
                &status("follower", Some(3), 55),
                t0 + Duration::from_millis(3_200),
                name,
            )
            .expect("a line when a leader is back");
        assert_eq!(
            back.text,
            "raft: following m3 in term 55 after 3.2 s without a leader (52 new terms started meanwhile)"
        );
        assert!(!back.warn);
    }

    #[test]
    fn a_leader_that_loses_its_quorum_says_so_once() {
        let mut log = RoleLog::default();
        let t0 = Instant::now();
        let lead = log.observe(&status("leader", Some(1), 4), t0, name);
        assert_eq!(lead.map(|l| l.text), Some("raft: leading term 4".into()));
        let mut lost = status("leader", Some(1), 4);
        lost.quorum_lost = true;
        lost.millis_since_quorum_ack = Some(180);
        let line = log.observe(&lost, t0, name).expect("a line");
        assert!(line.warn);
        assert!(line.text.contains("without a majority"), "{}", line.text);
        assert_eq!(log.observe(&lost, t0, name), None);
        let back = log.observe(
            &status("follower", Some(2), 5),
            t0 + Duration::from_millis(500),
            name,
        );
        assert_eq!(
            back.map(|l| l.text),
            Some(
                "raft: following m2 in term 5 after 0.5 s without a leader (1 new term started meanwhile)"
                    .into()
            )
        );
    }

    #[test]
    fn nothing_before_the_group_forms() {
        let mut log = RoleLog::default();
        let mut s = status("learner", None, 0);
        s.voters.clear();
        assert_eq!(log.observe(&s, Instant::now(), name), None);
    }
}
