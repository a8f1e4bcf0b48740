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

struct Builder;

impl StoreBuilder<ShoalRaft, LogStore, StateMachine> for Builder {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<ShoalRaft>> {
        let log = DiskLog::open_in_memory().expect("an in-memory SQLite log opens");
        let store = LogStore::open(log, WriteMode::Background).expect("an empty log store opens");
        let sm = StateMachine::open(store.shared()).expect("an empty store opens");
        Ok(((), store, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).await.unwrap();
}
