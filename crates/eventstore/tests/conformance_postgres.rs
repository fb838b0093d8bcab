//! The contract's conformance suite against the PostgreSQL backend (a fresh database per
//! test on the server of `TEST_DATABASE_URL`).

mod postgres_support;

use eventstore::backend::Postgres;
use eventstore::backend::postgres::connect_options;
use postgres_support::TestDatabase;

async fn fresh() -> (Postgres, (Postgres, TestDatabase)) {
    let database = TestDatabase::create().await;
    let options = connect_options(&database.url).expect("a valid URL");
    let store = Postgres::open(options, 8, events::Limits::default(), |_| {})
        .await
        .expect("the backend opens");
    // The guard closes the pool before the database is dropped.
    (store.clone(), (store, database))
}

events::conformance_tests!(fresh);
