//! Teams, second wave: roles, reading one invitation, list filters, per-batch expiry,
//! `already_invited` with the existing id, `Idempotency-Key`, Unicode normalization, one
//! expiry rule, the per-recipient mail throttle, the accept page's policy.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest;

use crate::both_databases;
use crate::support::{Db, TestApp, spawn_app, spawn_app_with, token_in};

async fn post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.admin(Method::POST, path)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn patch(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.admin(Method::PATCH, path)
        .json(&body)
        .send()
        .await
        .unwrap()
}

both_databases! {
    async fn roles_are_given_by_invitations_and_changed_on_invitations_and_members(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        let response = post(&app, &format!("/teams/{team}/invitations"), json!({ "emails": ["owner@example.com"], "role": "owner" })).await;
        let body: Value = response.json().await.unwrap();
        let id = body["results"][0]["invitation_id"].as_str().unwrap().to_owned();
        let one = app.get_json(&format!("/teams/{team}/invitations/{id}")).await;
        assert_eq!(one["role"], "owner");
        assert_eq!(one["status"], "pending");
        let changed = patch(&app, &format!("/teams/{team}/invitations/{id}"), json!({ "role": "admin" })).await;
        assert_eq!(changed.status(), StatusCode::OK);
        assert_eq!(changed.json::<Value>().await.unwrap()["role"], "admin");
        let messages = app.mail_files(1).await;
        let accepted: Value = app.accept(&token_in(&messages[0], &app.frontend_url)).await.json().await.unwrap();
        assert_eq!(accepted["role"], "admin");
        let member = accepted["member_id"].as_str().unwrap();
        let changed = patch(&app, &format!("/teams/{team}/members/{member}"), json!({ "role": "owner" })).await;
        assert_eq!(changed.status(), StatusCode::OK);
        let members = app.get_json(&format!("/teams/{team}/members")).await;
        assert_eq!(members["members"][0]["role"], "owner");
        let bad = patch(&app, &format!("/teams/{team}/members/{member}"), json!({ "role": "king" })).await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let actions = app.audit_actions(&team).await;
        assert!(actions.contains(&"invitation.role_changed".to_owned()), "{actions:?}");
        assert!(actions.contains(&"member.role_changed".to_owned()), "{actions:?}");
        app.stop().await;
    }

    async fn lists_filter_by_status_and_email_and_already_invited_names_the_existing_invitation(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        let (_, first) = app.invite(&team, &["a@example.com", "b@example.com", "c@example.com"]).await;
        let b = first["results"][1]["invitation_id"].as_str().unwrap().to_owned();
        let c = first["results"][2]["invitation_id"].as_str().unwrap().to_owned();
        assert_eq!(app.admin(Method::DELETE, &format!("/teams/{team}/invitations/{c}")).send().await.unwrap().status(), StatusCode::NO_CONTENT);
        let (_, again) = app.invite(&team, &["B@Example.com"]).await;
        assert_eq!(again["results"][0]["status"], "already_invited");
        assert_eq!(again["results"][0]["invitation_id"], b.as_str());
        let pending = app.get_json(&format!("/teams/{team}/invitations?status=pending")).await;
        assert_eq!(pending["invitations"].as_array().unwrap().len(), 2);
        let revoked = app.get_json(&format!("/teams/{team}/invitations?status=revoked")).await;
        assert_eq!(revoked["invitations"].as_array().unwrap().len(), 1);
        assert_eq!(revoked["invitations"][0]["id"], c.as_str());
        let by_email = app.get_json(&format!("/teams/{team}/invitations?email=B%40EXAMPLE.com")).await;
        assert_eq!(by_email["invitations"].as_array().unwrap().len(), 1);
        assert_eq!(by_email["invitations"][0]["id"], b.as_str());
        let none = app.get_json(&format!("/teams/{team}/members?email=a%40example.com")).await;
        assert_eq!(none["members"].as_array().unwrap().len(), 0);
        for bad in ["status=sent", "email=not-an-email"] {
            let response = app.admin(Method::GET, &format!("/teams/{team}/invitations?{bad}")).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
        app.stop().await;
    }

    async fn a_batch_sets_its_own_expiry_between_1_and_720_hours(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        let path = format!("/teams/{team}/invitations");
        for hours in [0, 721] {
            let response = post(&app, &path, json!({ "emails": ["a@example.com"], "expires_in_hours": hours })).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{hours}");
        }
        let before = std::time::SystemTime::now();
        let body: Value = post(&app, &path, json!({ "emails": ["a@example.com"], "expires_in_hours": 2 })).await.json().await.unwrap();
        let id = body["results"][0]["invitation_id"].as_str().unwrap();
        let mut connection = app.database().await;
        let expires_at: i64 = sqlx::query_scalar("SELECT expires_at FROM invitations WHERE id = $1")
            .bind(id).fetch_one(&mut connection).await.unwrap();
        let invited_at = before.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let lifetime = expires_at - invited_at;
        assert!((7_200_000 - 5_000..=7_200_000 + 5_000).contains(&lifetime), "{lifetime} ms");
        app.stop().await;
    }

    async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_body(db: Db) {
        let app = spawn_app(db).await;
        let create = |name: &str, key: &str| {
            app.admin(Method::POST, "/teams").header("idempotency-key", key).json(&json!({ "name": name })).send()
        };
        let first = create("Core", "key-1").await.unwrap();
        assert_eq!(first.status(), StatusCode::CREATED);
        let first: Value = first.json().await.unwrap();
        let again = create("Core", "key-1").await.unwrap();
        assert_eq!(again.status(), StatusCode::CREATED);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.json::<Value>().await.unwrap(), first);
        let other = create("Other", "key-1").await.unwrap();
        assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(other.headers()["content-type"], "application/problem+json");
        let teams = app.get_json("/teams").await;
        assert_eq!(teams["teams"].as_array().unwrap().len(), 1);

        let team = first["id"].as_str().unwrap();
        let path = format!("/teams/{team}/invitations");
        let invite = |emails: Value| {
            app.admin(Method::POST, &path).header("idempotency-key", "batch-1").json(&json!({ "emails": emails })).send()
        };
        let batch: Value = invite(json!(["a@example.com", "b@example.com"])).await.unwrap().json().await.unwrap();
        let replay = invite(json!(["a@example.com", "b@example.com"])).await.unwrap();
        assert_eq!(replay.status(), StatusCode::MULTI_STATUS);
        assert_eq!(replay.json::<Value>().await.unwrap(), batch, "the same ids, still `invited`");
        assert_eq!(invite(json!(["c@example.com"])).await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
        let list = app.get_json(&path).await;
        assert_eq!(list["invitations"].as_array().unwrap().len(), 2);
        let bad = app.admin(Method::POST, "/teams").header("idempotency-key", "has space").json(&json!({ "name": "X" })).send().await.unwrap();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        app.stop().await;
    }

    async fn names_and_emails_compare_after_nfkc_and_case_folding_and_controls_are_refused(db: Db) {
        let app = spawn_app(db).await;
        for (first, second) in [("Straße", "STRASSE"), ("Caf\u{e9}", "Cafe\u{301}"), ("\u{fb01}nance", "FINANCE")] {
            let created = post(&app, "/teams", json!({ "name": first })).await;
            assert_eq!(created.status(), StatusCode::CREATED, "{first}");
            let clash = post(&app, "/teams", json!({ "name": second })).await;
            assert_eq!(clash.status(), StatusCode::CONFLICT, "{first:?} and {second:?} are one name");
        }
        for hostile in ["Core\u{202e}gnp.exe", "Co\u{200b}re", "\u{2066}Core\u{2069}"] {
            let refused = post(&app, "/teams", json!({ "name": hostile })).await;
            assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{hostile:?}");
        }
        let team = app.create_team("Core").await;
        let (_, body) = app.invite(&team, &["straße@example.com", "STRASSE@example.com", "cafe\u{301}@example.com", "CAF\u{c9}@example.com", "al\u{200b}ice@example.com"]).await;
        let statuses: Vec<&str> = body["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["invited", "duplicate_in_request", "invited", "duplicate_in_request", "invalid_email"]);
        app.stop().await;
    }

    async fn an_expired_invitation_reads_expired_everywhere_and_cannot_be_resent_revoked_or_accepted(db: Db) {
        let app = spawn_app_with(db, |args| args.invite_resend_interval_seconds = 0).await;
        let team = app.create_team("Core").await;
        let (_, body) = app.invite(&team, &["alice@example.com"]).await;
        let id = body["results"][0]["invitation_id"].as_str().unwrap().to_owned();
        let messages = app.mail_files(1).await;
        let token = token_in(&messages[0], &app.frontend_url);
        app.invitation_until(&team, &id, "delivery sent", |i| i["delivery"]["status"] == "sent").await;
        let mut connection = app.database().await;
        sqlx::query("UPDATE invitations SET expires_at = 1 WHERE id = $1").bind(&id).execute(&mut connection).await.unwrap();
        assert_eq!(app.get_json(&format!("/teams/{team}/invitations/{id}")).await["status"], "expired");
        let listed = app.get_json(&format!("/teams/{team}/invitations?status=expired")).await;
        assert_eq!(listed["invitations"][0]["id"], id.as_str());
        for (method, path) in [(Method::POST, format!("/teams/{team}/invitations/{id}/resend")), (Method::DELETE, format!("/teams/{team}/invitations/{id}"))] {
            let response = app.admin(method.clone(), &path).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::CONFLICT, "{method} {path}");
            assert_eq!(response.json::<Value>().await.unwrap()["status"], "expired");
        }
        let accept = app.accept(&token).await;
        assert_eq!(accept.status(), StatusCode::GONE);
        assert!(accept.json::<Value>().await.unwrap()["detail"].as_str().unwrap().contains("expired"));
        // A new invitation marks the old one expired (audited) and is not blocked by it.
        let (_, again) = app.invite(&team, &["alice@example.com"]).await;
        assert_eq!(again["results"][0]["status"], "invited");
        let stored: String = sqlx::query_scalar("SELECT status FROM invitations WHERE id = $1").bind(&id).fetch_one(&mut connection).await.unwrap();
        assert_eq!(stored, "expired");
        assert!(app.audit_actions(&team).await.contains(&"invitation.expired".to_owned()));
        app.stop().await;
    }

    async fn accepting_a_revoked_invitation_says_revoked_not_accepted(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        let (_, body) = app.invite(&team, &["alice@example.com"]).await;
        let id = body["results"][0]["invitation_id"].as_str().unwrap().to_owned();
        let messages = app.mail_files(1).await;
        app.admin(Method::DELETE, &format!("/teams/{team}/invitations/{id}")).send().await.unwrap();
        let accept = app.accept(&token_in(&messages[0], &app.frontend_url)).await;
        assert_eq!(accept.status(), StatusCode::GONE);
        assert!(accept.json::<Value>().await.unwrap()["detail"].as_str().unwrap().contains("revoked"));
        app.stop().await;
    }

    async fn revoking_and_inviting_again_does_not_bypass_the_per_recipient_throttle(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        let (_, body) = app.invite(&team, &["alice@example.com"]).await;
        let first = body["results"][0]["invitation_id"].as_str().unwrap().to_owned();
        app.mail_files(1).await;
        app.admin(Method::DELETE, &format!("/teams/{team}/invitations/{first}")).send().await.unwrap();
        let (_, again) = app.invite(&team, &["alice@example.com"]).await;
        assert_eq!(again["results"][0]["status"], "invited");
        let second = again["results"][0]["invitation_id"].as_str().unwrap().to_owned();
        let invitation = app.get_json(&format!("/teams/{team}/invitations/{second}")).await;
        assert_eq!(invitation["delivery"]["status"], "queued");
        let mut connection = app.database().await;
        let (first_requested, second_due): (i64, i64) = (
            sqlx::query_scalar("SELECT delivery_requested_at FROM invitations WHERE id = $1").bind(&first).fetch_one(&mut connection).await.unwrap(),
            sqlx::query_scalar("SELECT delivery_next_attempt_at FROM invitations WHERE id = $1").bind(&second).fetch_one(&mut connection).await.unwrap(),
        );
        assert!(second_due >= first_requested + 60_000, "the first mail of the new invitation waits for the throttle");
        let resend = app.admin(Method::POST, &format!("/teams/{team}/invitations/{second}/resend")).send().await.unwrap();
        assert_eq!(resend.status(), StatusCode::TOO_MANY_REQUESTS);
        app.stop().await;
    }
}

#[tokio::test]
async fn the_accept_page_allows_only_its_own_script_and_style_by_hash_and_says_nosniff() {
    let app = spawn_app(Db::Sqlite).await;
    let response = app.public(Method::GET, "/invite").send().await.unwrap();
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let page = response.text().await.unwrap();
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    let between = |open: &str, close: &str| {
        let start = page.find(open).unwrap() + open.len();
        let end = page[start..].find(close).unwrap() + start;
        page[start..end].to_owned()
    };
    for source in [
        between("<script>", "</script>"),
        between("<style>", "</style>"),
    ] {
        use base64::Engine;
        let hash = base64::engine::general_purpose::STANDARD
            .encode(sha2::Sha256::digest(source.as_bytes()));
        assert!(
            policy.contains(&format!("'sha256-{hash}'")),
            "{policy} lacks {hash}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_created_team_has_a_location_under_app_url() {
    let app = spawn_app_with(Db::Sqlite, |args| {
        args.app_url = Some("https://api.example.com/".into())
    })
    .await;
    let response = app
        .admin(Method::POST, "/teams")
        .json(&json!({ "name": "Core" }))
        .send()
        .await
        .unwrap();
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!(
            "https://api.example.com/teams/{}",
            body["id"].as_str().unwrap()
        )
    );
    app.stop().await;
}
