//! openraft's own storage conformance suite (44 scenarios: log state, purge, truncate,
//! membership recovery, re-applying committed entries, snapshots) against our SQLite log
//! store and shoal's state machine.

use openraft::{
    StorageError,
    testing::log::{StoreBuilder, Suite},
};
use shoal_raft::{
    SqliteLog,
    group::{ShoalRaft, log_store::LogStore, state_machine::StateMachine},
};

struct Builder;

impl StoreBuilder<ShoalRaft, LogStore, StateMachine> for Builder {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<ShoalRaft>> {
        let log = SqliteLog::open_in_memory().expect("an in-memory SQLite log opens");
        let store = LogStore::new(log);
        let sm = StateMachine::open(store.shared()).expect("an empty store opens");
        Ok(((), store, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).await.unwrap();
}
