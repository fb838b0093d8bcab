//! Batch invitations: per-item statuses, the unique-index backstop under races, token storage.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Column, Row};

use crate::both_databases;
use crate::support::{recipient_of, spawn_app, token_in};

fn statuses(body: &Value) -> Vec<(String, String)> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["email"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

both_databases! {
    async fn a_batch_answers_207_with_a_status_per_email_in_request_order(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        let (status, _) = app.invite(&team, &["pending@example.com"]).await;
        assert_eq!(status, StatusCode::MULTI_STATUS);
        // Make member@ a member by accepting its invitation.
        app.invite(&team, &["member@example.com"]).await;
        let messages = app.mail_files(2).await;
        let message = messages.iter().find(|m| recipient_of(m) == "member@example.com").unwrap();
        assert_eq!(app.accept(&token_in(message, &app.frontend_url)).await.status(), StatusCode::OK);

        let (status, body) = app.invite(&team, &[
            " New@Example.com ", "not-an-email", "new@example.com", "pending@example.com", "MEMBER@example.com",
        ]).await;
        assert_eq!(status, StatusCode::MULTI_STATUS);
        assert_eq!(statuses(&body), vec![
            ("new@example.com".into(), "invited".into()),
            ("not-an-email".into(), "invalid_email".into()),
            ("new@example.com".into(), "duplicate_in_request".into()),
            ("pending@example.com".into(), "already_invited".into()),
            ("member@example.com".into(), "already_member".into()),
        ]);
        assert!(body["results"][0]["invitation_id"].is_string());
        assert!(body["results"][1]["error"].is_string());
        assert_eq!(body["summary"]["total"], 5);
        assert_eq!(body["summary"]["invited"], 1);
        assert_eq!(body["summary"]["invalid_email"], 1);
        assert_eq!(body["summary"]["duplicate_in_request"], 1);
        assert_eq!(body["summary"]["already_invited"], 1);
        assert_eq!(body["summary"]["already_member"], 1);
        app.stop().await;
    }

    async fn request_level_failures_are_problems_not_207(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        let too_many: Vec<String> = (0..101).map(|n| format!("u{n}@example.com")).collect();
        let response = app.admin(Method::POST, &format!("/teams/{team}/invitations"))
            .json(&json!({"emails": too_many})).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let none = app.admin(Method::POST, &format!("/teams/{team}/invitations"))
            .json(&json!({"emails": []})).send().await.unwrap();
        assert_eq!(none.status(), StatusCode::BAD_REQUEST);
        let unknown = uuid::Uuid::now_v7();
        let (status, _) = app.invite(&unknown.to_string(), &["a@example.com"]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let hundred: Vec<String> = (0..100).map(|n| format!("u{n}@example.com")).collect();
        let response = app.admin(Method::POST, &format!("/teams/{team}/invitations"))
            .json(&json!({"emails": hundred})).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::MULTI_STATUS);
        app.stop().await;
    }

    async fn many_concurrent_identical_batches_leave_exactly_one_pending_invitation_per_email(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        let emails: Vec<String> = (0..20).map(|n| format!("racer{n}@example.com")).collect();
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let client = app.client.clone();
            let url = format!("{}/teams/{team}/invitations", app.base);
            let token = app.admin_token.clone();
            let emails = emails.clone();
            tasks.push(tokio::spawn(async move {
                let response = client.post(url).bearer_auth(token).json(&json!({"emails": emails})).send().await.unwrap();
                let status = response.status();
                (status, response.json::<Value>().await.unwrap())
            }));
        }
        let mut invited = 0;
        for task in tasks {
            let (status, body) = task.await.unwrap();
            assert_eq!(status, StatusCode::MULTI_STATUS, "{body}");
            for (_, item) in statuses(&body) {
                assert!(item == "invited" || item == "already_invited", "{item}");
                if item == "invited" { invited += 1; }
            }
        }
        assert_eq!(invited, emails.len());
        let mut connection = app.database().await;
        let rows = sqlx::query("SELECT email, COUNT(*) AS n FROM invitations WHERE status = 'pending' GROUP BY email")
            .fetch_all(&mut connection).await.unwrap();
        assert_eq!(rows.len(), emails.len());
        for row in rows {
            assert_eq!(row.try_get::<i64, _>("n").unwrap(), 1);
        }
        app.stop().await;
    }

    async fn the_raw_token_is_stored_nowhere_and_its_sha256_is(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        app.invite(&team, &["alice@example.com"]).await;
        let messages = app.mail_files(1).await;
        let token = token_in(&messages[0], &app.frontend_url);
        assert_eq!(token.len(), 43);
        let hash = teams::token::sha256_hex(token.as_bytes());
        let mut connection = app.database().await;
        let mut hash_seen = false;
        for table in ["teams", "members", "invitations", "invitation_tokens"] {
            let rows = sqlx::query(&format!("SELECT * FROM {table}")).fetch_all(&mut connection).await.unwrap();
            for row in rows {
                for column in row.columns() {
                    let name = column.name();
                    let value = row.try_get::<Option<String>, _>(name)
                        .ok().flatten()
                        .or_else(|| row.try_get::<Option<i64>, _>(name).ok().flatten().map(|v| v.to_string()))
                        .unwrap_or_default();
                    assert!(!value.contains(&token), "raw token found in {table}.{name}");
                    hash_seen |= value == hash;
                }
            }
        }
        assert!(hash_seen, "the token's SHA-256 is not stored");
        app.stop().await;
    }

    async fn deleting_a_team_revokes_its_pending_invitations(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        app.invite(&team, &["alice@example.com"]).await;
        let messages = app.mail_files(1).await;
        let token = token_in(&messages[0], &app.frontend_url);
        app.admin(Method::DELETE, &format!("/teams/{team}")).send().await.unwrap();
        assert_eq!(app.accept(&token).await.status(), StatusCode::GONE);
        let mut connection = app.database().await;
        let status: String = sqlx::query_scalar("SELECT status FROM invitations").fetch_one(&mut connection).await.unwrap();
        assert_eq!(status, "revoked");
        app.stop().await;
    }

    async fn a_revoked_invitation_no_longer_blocks_a_new_one_and_its_link_is_gone(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        let (_, body) = app.invite(&team, &["alice@example.com"]).await;
        let id = body["results"][0]["invitation_id"].as_str().unwrap().to_owned();
        let messages = app.mail_files(1).await;
        let token = token_in(&messages[0], &app.frontend_url);
        let revoked = app.admin(Method::DELETE, &format!("/teams/{team}/invitations/{id}")).send().await.unwrap();
        assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.accept(&token).await.status(), StatusCode::GONE);
        let (_, again) = app.invite(&team, &["alice@example.com"]).await;
        assert_eq!(again["results"][0]["status"], "invited");
        let list: Value = app.admin(Method::GET, &format!("/teams/{team}/invitations")).send().await.unwrap().json().await.unwrap();
        let statuses: Vec<&str> = list["invitations"].as_array().unwrap().iter().map(|i| i["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, vec!["revoked", "pending"]);
        app.stop().await;
    }

    async fn an_expired_invitation_answers_410_and_does_not_block_a_new_one(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        app.invite(&team, &["alice@example.com"]).await;
        let messages = app.mail_files(1).await;
        let token = token_in(&messages[0], &app.frontend_url);
        let mut connection = app.database().await;
        sqlx::query("UPDATE invitations SET expires_at = 0").execute(&mut connection).await.unwrap();
        assert_eq!(app.accept(&token).await.status(), StatusCode::GONE);
        let (_, again) = app.invite(&team, &["alice@example.com"]).await;
        assert_eq!(again["results"][0]["status"], "invited");
        app.stop().await;
    }
}
