//! The audit trail: every change, in commit order, with actor, request id and address.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_databases;
use crate::support::{recipient_of, spawn_app_with, token_in};

both_databases! {
    async fn every_change_is_audited_in_order_with_actor_request_id_and_address(db: Db) {
        let app = spawn_app_with(db, |args| args.invite_resend_interval_seconds = 0).await;
        let created = app.admin(Method::POST, "/teams").header("x-request-id", "create-1")
            .json(&json!({ "name": "Core" })).send().await.unwrap();
        let team = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        app.admin(Method::PATCH, &format!("/teams/{team}")).json(&json!({ "name": "Core Team" })).send().await.unwrap();
        let (_, body) = app.invite(&team, &["a@example.com", "b@example.com"]).await;
        let a = body["results"][0]["invitation_id"].as_str().unwrap().to_owned();
        let b = body["results"][1]["invitation_id"].as_str().unwrap().to_owned();
        for id in [&a, &b] {
            app.invitation_until(&team, id, "delivery sent", |i| i["delivery"]["status"] == "sent").await;
        }
        let resent = app.admin(Method::POST, &format!("/teams/{team}/invitations/{b}/resend")).send().await.unwrap();
        assert_eq!(resent.status(), StatusCode::ACCEPTED);
        app.admin(Method::DELETE, &format!("/teams/{team}/invitations/{b}")).send().await.unwrap();
        let messages = app.mail_files(2).await;
        let to_a = messages.iter().find(|m| recipient_of(m) == "a@example.com").unwrap();
        let accepted = app.accept(&token_in(to_a, &app.frontend_url)).await;
        assert_eq!(accepted.status(), StatusCode::OK);
        let member = accepted.json::<Value>().await.unwrap()["member_id"].as_str().unwrap().to_owned();
        app.admin(Method::DELETE, &format!("/teams/{team}/members/{member}")).send().await.unwrap();
        app.admin(Method::DELETE, &format!("/teams/{team}")).send().await.unwrap();

        let page = app.get_json(&format!("/teams/{team}/audit")).await;
        let entries = page["entries"].as_array().unwrap();
        let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
        let expected_order = ["team.created", "team.renamed", "invitation.created", "invitation.created"];
        assert_eq!(&actions[..4], &expected_order);
        for action in ["invitation.delivered", "invitation.resent", "invitation.revoked", "invitation.accepted", "member.removed"] {
            assert!(actions.contains(&action), "{action} missing from {actions:?}");
        }
        assert_eq!(actions.last(), Some(&"team.deleted"));
        let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
        assert_eq!(entries[0]["actor"], "admin");
        assert_eq!(entries[0]["request_id"], "create-1");
        assert_eq!(entries[0]["client_address"], "127.0.0.1");
        let accepted = entries.iter().find(|e| e["action"] == "invitation.accepted").unwrap();
        assert_eq!(accepted["actor"], "invitee");
        let delivered = entries.iter().find(|e| e["action"] == "invitation.delivered").unwrap();
        assert_eq!(delivered["actor"], "system");
        assert!(entries.iter().all(|e| e["id"].as_str().unwrap().len() == 36));

        // Paging by `after`, and a deleted team keeps its trail.
        let first = app.get_json(&format!("/teams/{team}/audit?limit=2")).await;
        assert_eq!(first["entries"].as_array().unwrap().len(), 2);
        assert_eq!(first["next_after"], 2);
        let rest = app.get_json(&format!("/teams/{team}/audit?after=2&limit=1000")).await;
        assert_eq!(rest["entries"].as_array().unwrap().len(), entries.len() - 2);
        assert_eq!(rest["entries"][0]["seq"], 3);
        assert!(rest["next_after"].is_null());
        let unknown = app.admin(Method::GET, &format!("/teams/{}/audit", uuid::Uuid::now_v7())).send().await.unwrap();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        app.stop().await;
    }

    async fn a_failed_change_leaves_no_audit_entry(db: Db) {
        let app = spawn_app_with(db, |_| {}).await;
        let team = app.create_team("Core").await;
        let clash = app.admin(Method::POST, "/teams").json(&json!({ "name": "core" })).send().await.unwrap();
        assert_eq!(clash.status(), StatusCode::CONFLICT);
        let rename = app.admin(Method::PATCH, &format!("/teams/{team}")).json(&json!({ "name": "" })).send().await.unwrap();
        assert_eq!(rename.status(), StatusCode::BAD_REQUEST);
        assert_eq!(app.audit_actions(&team).await, vec!["team.created".to_owned()]);
        let mut connection = app.database().await;
        let entries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_entries").fetch_one(&mut connection).await.unwrap();
        assert_eq!(entries, 1);
        app.stop().await;
    }
}
