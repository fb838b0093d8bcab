//! Accepting tokens: single use, 404 vs 410, concurrency, resend, the accept page.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_databases;
use crate::support::{Db, spawn_app, spawn_app_with, token_in};

both_databases! {
    async fn accepting_a_token_makes_a_member_once_and_then_answers_410(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        app.invite(&team, &["Alice@Example.com"]).await;
        let messages = app.mail_files(1).await;
        let token = token_in(&messages[0], &app.frontend_url);

        let preview = app.public(Method::POST, "/invitations/preview").json(&json!({"token": token})).send().await.unwrap();
        assert_eq!(preview.status(), StatusCode::OK);
        assert_eq!(preview.headers()["cache-control"], "no-store");
        let preview: Value = preview.json().await.unwrap();
        assert_eq!(preview["team_name"], "Core");

        let accepted = app.accept(&token).await;
        assert_eq!(accepted.status(), StatusCode::OK);
        assert_eq!(accepted.headers()["cache-control"], "no-store");
        let accepted: Value = accepted.json().await.unwrap();
        assert_eq!(accepted["email"], "alice@example.com");
        assert_eq!(accepted["team_id"], team.as_str());

        let second = app.accept(&token).await;
        assert_eq!(second.status(), StatusCode::GONE);
        assert_eq!(second.headers()["content-type"], "application/problem+json");

        let members: Value = app.admin(Method::GET, &format!("/teams/{team}/members")).send().await.unwrap().json().await.unwrap();
        let members = members["members"].as_array().unwrap();
        assert_eq!(members.len(), 1);
        assert_eq!(members[0]["email"], "alice@example.com");
        assert_eq!(members[0]["role"], "member");

        let unknown = app.accept("A".repeat(43).as_str()).await;
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        app.stop().await;
    }

    async fn two_concurrent_accepts_of_one_token_yield_one_membership_and_one_410(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        app.invite(&team, &["alice@example.com"]).await;
        let messages = app.mail_files(1).await;
        let token = token_in(&messages[0], &app.frontend_url);
        let (a, b) = tokio::join!(app.accept(&token), app.accept(&token));
        let mut statuses = vec![a.status(), b.status()];
        statuses.sort();
        assert_eq!(statuses, vec![StatusCode::OK, StatusCode::GONE]);
        let mut connection = app.database().await;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM members").fetch_one(&mut connection).await.unwrap();
        assert_eq!(count, 1);
        app.stop().await;
    }

    async fn removing_a_member_is_soft_and_the_email_can_be_invited_again(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        app.invite(&team, &["alice@example.com"]).await;
        let messages = app.mail_files(1).await;
        let accepted: Value = app.accept(&token_in(&messages[0], &app.frontend_url)).await.json().await.unwrap();
        let member = accepted["member_id"].as_str().unwrap();
        let removed = app.admin(Method::DELETE, &format!("/teams/{team}/members/{member}")).send().await.unwrap();
        assert_eq!(removed.status(), StatusCode::NO_CONTENT);
        let list: Value = app.admin(Method::GET, &format!("/teams/{team}/members")).send().await.unwrap().json().await.unwrap();
        assert_eq!(list["members"].as_array().unwrap().len(), 0);
        let (_, again) = app.invite(&team, &["alice@example.com"]).await;
        assert_eq!(again["results"][0]["status"], "invited");
        let mut connection = app.database().await;
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM members WHERE deleted_at IS NOT NULL").fetch_one(&mut connection).await.unwrap();
        assert_eq!(rows, 1);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_resend_within_the_interval_answers_429_with_retry_after() {
    let app = spawn_app(Db::Sqlite).await;
    let team = app.create_team("Core").await;
    let (_, body) = app.invite(&team, &["alice@example.com"]).await;
    let id = body["results"][0]["invitation_id"].as_str().unwrap();
    let response = app
        .admin(
            Method::POST,
            &format!("/teams/{team}/invitations/{id}/resend"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_resend_mails_a_new_token_and_the_old_one_is_gone() {
    let app = spawn_app_with(Db::Sqlite, |args| args.invite_resend_interval_seconds = 0).await;
    let team = app.create_team("Core").await;
    let (_, body) = app.invite(&team, &["alice@example.com"]).await;
    let id = body["results"][0]["invitation_id"].as_str().unwrap();
    let first = app.mail_files(1).await;
    let old_token = token_in(&first[0], &app.frontend_url);
    let response = app
        .admin(
            Method::POST,
            &format!("/teams/{team}/invitations/{id}/resend"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let both = app.mail_files(2).await;
    let new_token = both
        .iter()
        .map(|m| token_in(m, &app.frontend_url))
        .find(|t| *t != old_token)
        .expect("a second message with a new token");
    assert_eq!(app.accept(&old_token).await.status(), StatusCode::GONE);
    assert_eq!(app.accept(&new_token).await.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn the_accept_page_is_self_contained_and_consumes_nothing_on_get() {
    let app = spawn_app(Db::Sqlite).await;
    let team = app.create_team("Core").await;
    app.invite(&team, &["alice@example.com"]).await;
    let messages = app.mail_files(1).await;
    let token = token_in(&messages[0], &app.frontend_url);
    let response = app.public(Method::GET, "/invite").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["referrer-policy"], "no-referrer");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("location.hash"));
    assert!(page.contains("/invitations/accept"));
    assert!(page.contains("/invitations/preview"));
    assert!(!page.contains("src=\"http"), "loads nothing from elsewhere");
    // Opening the link (as a mail scanner would) leaves the token usable.
    app.public(Method::GET, &format!("/invite?token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(app.accept(&token).await.status(), StatusCode::OK);
    app.stop().await;
}
