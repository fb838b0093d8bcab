//! Races driven deterministically: a second database connection holds a row lock while a
//! request waits for it, then commits a conflicting change (PostgreSQL, where transactions run
//! concurrently); on SQLite, where writers run one at a time, the same outcomes in sequence.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::Connection;

use crate::both_databases;
use crate::support::{Db, TestApp, spawn_app, token_in};

/// Waits until some other session of this database waits for a lock.
async fn someone_waits_for_a_lock(app: &TestApp) {
    let mut observer = app.database().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut observer)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no request waited for the row lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn invited(app: &TestApp, team: &str, email: &str) -> (String, String) {
    let (_, body) = app.invite(team, &[email]).await;
    let id = body["results"][0]["invitation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The worker has recorded the delivery (so its mail is written whole): nothing but the
    // test touches the row from here.
    app.invitation_until(team, &id, "delivery sent", |i| {
        i["delivery"]["status"] == "sent"
    })
    .await;
    let messages = app.mail_files(1).await;
    (id, token_in(&messages[0], &app.frontend_url))
}

async fn assert_conflict_with_status(response: reqwest::Response, status: &str) {
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_waiting_on_an_accept_that_commits_answers_409_accepted() {
    if crate::support::postgres_url().is_none() {
        return;
    }
    for action in ["revoke", "resend"] {
        let app = crate::support::spawn_app_with(Db::Postgres, |args| {
            args.invite_resend_interval_seconds = 0;
        })
        .await;
        let team = app.create_team("Core").await;
        let (id, _) = invited(&app, &team, "alice@example.com").await;
        // The accept's transaction, by hand: lock the invitation and mark it accepted.
        let mut accept = app.database().await;
        let mut tx = accept.begin().await.unwrap();
        sqlx::query("SELECT id FROM invitations WHERE id = $1 FOR UPDATE")
            .bind(&id)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("UPDATE invitations SET status = 'accepted', finished_at = 1 WHERE id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await
            .unwrap();
        let request = match action {
            "revoke" => app.admin(Method::DELETE, &format!("/teams/{team}/invitations/{id}")),
            _ => app.admin(
                Method::POST,
                &format!("/teams/{team}/invitations/{id}/resend"),
            ),
        };
        let pending = tokio::spawn(request.send());
        someone_waits_for_a_lock(&app).await;
        tx.commit().await.unwrap();
        let response = pending.await.unwrap().unwrap();
        assert_conflict_with_status(response, "accepted").await;
        let mut connection = app.database().await;
        let status: String = sqlx::query_scalar("SELECT status FROM invitations WHERE id = $1")
            .bind(&id)
            .fetch_one(&mut connection)
            .await
            .unwrap();
        assert_eq!(
            status, "accepted",
            "{action} did not rewrite the accepted row"
        );
        drop(accept);
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_waiting_on_a_team_delete_that_commits_answers_404_and_creates_nothing() {
    if crate::support::postgres_url().is_none() {
        return;
    }
    let app = spawn_app(Db::Postgres).await;
    let team = app.create_team("Core").await;
    let mut delete = app.database().await;
    let mut tx = delete.begin().await.unwrap();
    sqlx::query("SELECT id FROM teams WHERE id = $1 FOR UPDATE")
        .bind(&team)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE teams SET deleted_at = 1 WHERE id = $1")
        .bind(&team)
        .execute(&mut *tx)
        .await
        .unwrap();
    let request = app
        .admin(Method::POST, &format!("/teams/{team}/invitations"))
        .json(&serde_json::json!({ "emails": ["alice@example.com"] }));
    let pending = tokio::spawn(request.send());
    someone_waits_for_a_lock(&app).await;
    tx.commit().await.unwrap();
    let response = pending.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let mut connection = app.database().await;
    let invitations: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM invitations")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(invitations, 0);
    drop(delete);
    app.stop().await;
}

both_databases! {
    async fn revoke_resend_and_role_change_of_an_accepted_invitation_answer_409_with_its_state(db: Db) {
        let app = crate::support::spawn_app_with(db, |args| args.invite_resend_interval_seconds = 0).await;
        let team = app.create_team("Core").await;
        let (id, token) = invited(&app, &team, "alice@example.com").await;
        assert_eq!(app.accept(&token).await.status(), StatusCode::OK);
        let revoke = app.admin(Method::DELETE, &format!("/teams/{team}/invitations/{id}")).send().await.unwrap();
        assert_conflict_with_status(revoke, "accepted").await;
        let resend = app.admin(Method::POST, &format!("/teams/{team}/invitations/{id}/resend")).send().await.unwrap();
        assert_conflict_with_status(resend, "accepted").await;
        let role = app.admin(Method::PATCH, &format!("/teams/{team}/invitations/{id}"))
            .json(&serde_json::json!({ "role": "admin" })).send().await.unwrap();
        assert_conflict_with_status(role, "accepted").await;
        app.stop().await;
    }
}
