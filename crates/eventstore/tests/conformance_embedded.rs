//! The contract's conformance suite against the embedded backend (a fresh log in a
//! temporary directory per test).

use eventstore::backend::Embedded;

async fn fresh() -> (Embedded, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let options = eventlog::Options {
        durability: eventlog::Durability::Never,
        ..eventlog::Options::default()
    };
    let store = Embedded::open(dir.path().join("events"), options, 0, |_| {})
        .await
        .expect("the log opens");
    (store, dir)
}

events::conformance_tests!(fresh);
