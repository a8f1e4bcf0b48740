//! The durable log on its own: ordering rules, truncation, purge, votes and snapshots
//! across reopen, and a model check against a plain Vec.

use proptest::prelude::*;
use shoal_raft::{DiskLog, LogRecord, StoreError, testing::TempDir};

fn rec(index: u64, term: u64) -> LogRecord {
    LogRecord {
        index,
        term,
        payload: format!("cmd-{index}").into_bytes(),
    }
}

#[test]
fn appends_follow_the_last_entry_and_refusals_change_nothing() {
    let mut log = DiskLog::open_in_memory().unwrap();
    assert_eq!(log.last().unwrap(), None);
    log.append(&[rec(1, 1), rec(2, 1), rec(3, 2)]).unwrap();
    assert_eq!(log.last().unwrap(), Some((3, 2)));
    assert!(matches!(
        log.append(&[rec(5, 2)]),
        Err(StoreError::Gap {
            got: 5,
            last: Some(3)
        })
    ));
    assert!(matches!(
        log.append(&[rec(4, 2), rec(6, 2)]),
        Err(StoreError::Gap { got: 6, .. })
    ));
    assert!(matches!(
        log.append(&[rec(4, 1)]),
        Err(StoreError::TermRegression {
            index: 4,
            term: 1,
            previous: 2
        })
    ));
    assert_eq!(
        log.last().unwrap(),
        Some((3, 2)),
        "refused batches wrote nothing"
    );
    assert_eq!(log.entries(2..=3).unwrap(), vec![rec(2, 1), rec(3, 2)]);
    log.validate().unwrap();
}

#[test]
fn truncate_and_purge() {
    let mut log = DiskLog::open_in_memory().unwrap();
    log.append(&(1..=10).map(|i| rec(i, 1 + i / 4)).collect::<Vec<_>>())
        .unwrap();
    log.truncate_after(Some(7)).unwrap();
    assert_eq!(log.last().unwrap(), Some((7, 2)));
    log.append(&[rec(8, 5)]).unwrap();
    log.purge_upto(5, 2).unwrap();
    assert_eq!(log.purged().unwrap(), Some((5, 2)));
    assert_eq!(
        log.entries(0..=100).unwrap().first().map(|r| r.index),
        Some(6)
    );
    log.purge_upto(8, 5).unwrap();
    assert_eq!(log.entries(0..=100).unwrap(), vec![]);
    assert_eq!(
        log.last().unwrap(),
        Some((8, 5)),
        "an empty log reports the last purged entry"
    );
    log.append(&[rec(9, 5)]).unwrap();
    assert!(matches!(
        log.append(&[rec(11, 5)]),
        Err(StoreError::Gap { .. })
    ));
    log.truncate_after(None).unwrap();
    log.validate().unwrap();
}

/// The commit index lives in its own unsynced, checksummed file; SQLite (vote, purge
/// point, snapshot) stays `synchronous=FULL` through every kind of batch, so no WAL
/// checkpoint ever copies its pages without fsync. A torn commit-index record reads as
/// unknown, never as a wrong value.
#[test]
fn the_commit_index_never_puts_sqlite_in_unsynced_mode() {
    let dir = TempDir::new("raft-committed").unwrap();
    let path = dir.path().join("raft.db");
    {
        let mut log = DiskLog::open(&path).unwrap();
        log.append(&[rec(1, 1), rec(2, 1)]).unwrap();
        log.save_vote(b"vote").unwrap();
        let (_, before) = log.sqlite_sync_and_changes().unwrap();
        for i in 0..50u8 {
            log.save_committed(&[b'c', i]).unwrap();
        }
        // No SQLite write at all (a commit index used to be an unsynced SQLite
        // commit), and the connection stays FULL (2).
        assert_eq!(log.sqlite_sync_and_changes().unwrap(), (2, before));
    }
    let committed = dir.path().join("raft.committed");
    assert!(committed.is_file());
    let log = DiskLog::open(&path).unwrap();
    assert_eq!(log.committed().unwrap().as_deref(), Some(&[b'c', 49][..]));
    drop(log);
    // A torn record: the checksum refuses it, and the log opens knowing none.
    let mut bytes = std::fs::read(&committed).unwrap();
    bytes[9] ^= 0xFF;
    std::fs::write(&committed, &bytes).unwrap();
    let log = DiskLog::open(&path).unwrap();
    assert_eq!(log.committed().unwrap(), None);
    assert_eq!(log.vote().unwrap().as_deref(), Some(&b"vote"[..]));
}

#[test]
fn everything_survives_reopen() {
    let dir = TempDir::new("raft-reopen").unwrap();
    let path = dir.path().join("raft.db");
    {
        let mut log = DiskLog::open(&path).unwrap();
        log.append(&[rec(1, 1), rec(2, 1)]).unwrap();
        log.save_vote(b"term=3,for=m2").unwrap();
        log.save_committed(b"2").unwrap();
        log.save_snapshot(b"meta-1", b"data-1").unwrap();
        log.save_snapshot(b"meta-2", b"data-2").unwrap();
    }
    let log = DiskLog::open(&path).unwrap();
    assert_eq!(log.entries(1..=2).unwrap(), vec![rec(1, 1), rec(2, 1)]);
    assert_eq!(log.vote().unwrap().as_deref(), Some(&b"term=3,for=m2"[..]));
    assert_eq!(log.committed().unwrap().as_deref(), Some(&b"2"[..]));
    let snap = log.snapshot().unwrap().expect("a snapshot");
    assert_eq!(
        (snap.meta, snap.data),
        (b"meta-2".to_vec(), b"data-2".to_vec())
    );
}

#[derive(Debug, Clone)]
enum Op {
    Append(u8, u64),
    Truncate(u64),
    Purge(u64),
    /// Close and open again (file logs only: recovery from the segments and SQLite).
    Reopen,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..5, 0u64..3).prop_map(|(n, dterm)| Op::Append(n, dterm)),
        1 => (0u64..30).prop_map(Op::Truncate),
        1 => (0u64..30).prop_map(Op::Purge),
        1 => Just(Op::Reopen),
    ]
}

/// Runs `ops` on `log` (reopened from `path` on `Reopen` when there is one) and
/// checks it against a plain vector after every step.
fn check_against_model(
    mut log: DiskLog,
    path: Option<&std::path::Path>,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut model: Vec<(u64, u64)> = Vec::new();
    let mut purged: Option<(u64, u64)> = None;
    for op in ops {
        match op {
            Op::Append(n, dterm) => {
                let (last_i, last_t) = model.last().copied().or(purged).unwrap_or((0, 1));
                let batch: Vec<LogRecord> = (1..=n as u64)
                    .map(|k| rec(last_i + k, last_t + dterm))
                    .collect();
                log.append(&batch).unwrap();
                model.extend(batch.iter().map(|r| (r.index, r.term)));
            }
            Op::Truncate(i) => {
                if purged.is_some_and(|(p, _)| i < p) {
                    continue; // Raft never truncates below a snapshot
                }
                log.truncate_after(Some(i)).unwrap();
                model.retain(|(idx, _)| *idx <= i);
            }
            Op::Purge(i) => {
                // Raft purges only what a snapshot covers: entries it has seen.
                if let Some(&(idx, term)) = model.iter().find(|(idx, _)| *idx == i) {
                    log.purge_upto(i, term).unwrap();
                    model.retain(|(x, _)| *x > i);
                    purged = Some((idx, term));
                }
            }
            Op::Reopen => {
                if let Some(path) = path {
                    drop(log);
                    log = DiskLog::open(path).unwrap();
                }
            }
        }
        let got: Vec<(u64, u64)> = log
            .entries(0..=u64::MAX)
            .unwrap()
            .iter()
            .map(|r| (r.index, r.term))
            .collect();
        prop_assert_eq!(&got, &model);
        prop_assert_eq!(log.last().unwrap(), model.last().copied().or(purged));
        log.validate().map_err(TestCaseError::fail)?;
    }
    Ok(())
}

proptest! {
    /// Any sequence of valid appends, truncations and purges leaves the log exactly as
    /// a plain vector model says, with its invariants intact.
    #[test]
    fn matches_a_vec_model(ops in prop::collection::vec(arb_op(), 1..40)) {
        check_against_model(DiskLog::open_in_memory().unwrap(), None, ops)?;
    }

    /// The same on synced files (space reserved ahead of the writes), closing and
    /// reopening in between: segments, purge point and truncations come back exactly —
    /// nothing truncated reappears from the reserved space.
    #[test]
    fn files_match_a_vec_model_across_reopen(ops in prop::collection::vec(arb_op(), 1..40)) {
        let dir = TempDir::new("raft-model").unwrap();
        let path = dir.path().join("raft.db");
        check_against_model(DiskLog::open(&path).unwrap(), Some(&path), ops)?;
    }
}
