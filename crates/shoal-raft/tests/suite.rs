//! openraft's own storage conformance suite (44 scenarios: log state, purge, truncate,
//! membership recovery, re-applying committed entries, snapshots) against our SQLite log
//! store and shoal's state machine.

use openraft::{
    StorageError,
    testing::log::{StoreBuilder, Suite},
};
use shoal_raft::{
    DiskLog,
    group::{
        ShoalRaft,
        log_store::{LogStore, WriteMode},
        state_machine::StateMachine,
    },
};

/// `member`: the store of that member, which writes other leaders' small appends in
/// place (`LogStore::open_as`); `None`: every write through the writer thread.
struct Builder {
    member: Option<u64>,
}

impl StoreBuilder<ShoalRaft, LogStore, StateMachine> for Builder {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<ShoalRaft>> {
        let log = DiskLog::open_in_memory().expect("an in-memory SQLite log opens");
        let store = match self.member {
            Some(id) => LogStore::open_as(id, log, WriteMode::Background),
            None => LogStore::open(log, WriteMode::Background),
        }
        .expect("an empty log store opens");
        let sm = StateMachine::open(store.shared()).expect("an empty store opens");
        Ok(((), store, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(Builder { member: None }).await.unwrap();
}

/// The same, as a member that no entry of the suite names as its leader: its small
/// appends are written in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes_for_a_follower_writing_in_place() {
    Suite::test_all(Builder { member: Some(99) }).await.unwrap();
}
