//! Group commit: queued writes share one transaction, keep their order, and each gets
//! its own outcome.

use std::sync::{Arc, Barrier, mpsc};

use shoal_raft::{DiskLog, LogRecord, StoreError, Write, writer::LogWriter};

fn rec(index: u64, term: u64) -> Write {
    Write::Append(vec![LogRecord {
        index,
        term,
        payload: vec![index as u8],
    }])
}

/// While the writer is held in the first write's callback, the other 999 queue up; they
/// go out together in the next transaction: at most 2 commits for 1,000 appends (1 if
/// the writer woke late and took them all at once), all durable, in order.
#[test]
fn queued_writes_share_one_commit() {
    let writer = LogWriter::spawn(DiskLog::open_in_memory().unwrap());
    let gate = Arc::new(Barrier::new(2));
    let (tx, rx) = mpsc::channel::<Result<(), StoreError>>();
    let hold = gate.clone();
    let first_tx = tx.clone();
    writer
        .submit(
            rec(1, 1),
            Box::new(move |r| {
                first_tx.send(r).unwrap();
                hold.wait(); // keep the writer here until the rest is queued
            }),
        )
        .unwrap();
    for i in 2..=1000 {
        let tx = tx.clone();
        writer
            .submit(rec(i, 1), Box::new(move |r| tx.send(r).unwrap()))
            .unwrap();
    }
    gate.wait();
    let results: Vec<_> = (0..1000).map(|_| rx.recv().unwrap()).collect();
    assert!(results.iter().all(Result::is_ok));
    assert!(writer.commits() <= 2, "{} commits", writer.commits());
    let log = writer.close().unwrap();
    assert_eq!(log.last().unwrap(), Some((1000, 1)));
    log.validate().unwrap();
}

/// In one batch: a vote, appends, a refused append (gap) and a truncation. Order is kept,
/// the refusal is reported to its own caller only.
#[test]
fn one_batch_keeps_order_and_isolates_refusals() {
    let mut log = DiskLog::open_in_memory().unwrap();
    let results = log.write_batch(&[
        Write::Vote(b"v1".to_vec()),
        rec(1, 1),
        rec(2, 1),
        rec(4, 1), // gap: refused
        rec(3, 2),
        Write::TruncateAfter(Some(2)),
        rec(3, 3),
    ]);
    let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(ok, [true, true, true, false, true, true, true]);
    assert!(matches!(
        results[3],
        Err(StoreError::Gap {
            got: 4,
            last: Some(2)
        })
    ));
    assert_eq!(log.last().unwrap(), Some((3, 3)));
    assert_eq!(log.vote().unwrap().as_deref(), Some(&b"v1"[..]));
    log.validate().unwrap();
}
