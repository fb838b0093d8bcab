//! Delivery that never stalls, never kills a link already mailed, gives up on permanent
//! errors, and mails each invitation once with several processes on one database. Real SMTP
//! servers on loopback that misbehave on purpose.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use teams::Secret;

use crate::both_databases;
use crate::support::{
    Db, Misbehaviour, SmtpServer, eventually, recipient_of, spawn_app_with, spawn_second_app,
    token_in,
};

fn invitation_id(body: &Value, index: usize) -> String {
    body["results"][index]["invitation_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

both_databases! {
    async fn a_silent_smtp_server_fails_one_attempt_after_the_send_timeout_and_the_others_go_on(db: Db) {
        // The first connection is accepted and never greeted; the others are served.
        let smtp = SmtpServer::misbehaving(Misbehaviour::Silent, 1).await;
        let url = smtp.url();
        let app = spawn_app_with(db, |args| {
            args.smtp_url = Some(Secret::new(url));
            args.mail_send_timeout_seconds = 2;
            args.mail_retry_initial_ms = 50;
        })
        .await;
        let team = app.create_team("Core").await;
        let (_, first) = app.invite(&team, &["stuck@example.com"]).await;
        let stuck = invitation_id(&first, 0);
        eventually("the silent connection", || async { (smtp.connection_count() >= 1).then_some(()) }).await;
        let others: Vec<String> = (0..3).map(|n| format!("other{n}@example.com")).collect();
        let refs: Vec<&str> = others.iter().map(String::as_str).collect();
        app.invite(&team, &refs).await;
        // The others arrive while the first is still held by the silent server.
        let received = eventually("the three other messages", || {
            let received = smtp.received();
            async move { (received.len() >= 3).then_some(received) }
        })
        .await;
        let mut recipients: Vec<String> = received.iter().map(|m| recipient_of(m)).collect();
        recipients.sort();
        assert_eq!(recipients, others);
        // The stuck attempt times out, is recorded, and the retry delivers.
        let failing = app.invitation_until(&team, &stuck, "the timeout recorded or a retry sent", |i| {
            i["delivery"]["attempts"].as_i64() >= Some(1)
        }).await;
        let invitation = if failing["delivery"]["status"] == "sent" {
            failing
        } else {
            assert!(failing["delivery"]["last_error"].as_str().unwrap().contains("MAIL_SEND_TIMEOUT_SECONDS"), "{failing}");
            app.invitation_until(&team, &stuck, "the retry sent", |i| i["delivery"]["status"] == "sent").await
        };
        assert_eq!(invitation["delivery"]["attempts"], 2, "{invitation}");
        assert!(app.metric("teams_mail_failures_total") >= 1.0);
        assert!(app.metric("teams_mail_sends_total") >= 4.0);
        app.stop().await;
    }

    async fn a_lost_reply_after_the_final_dot_sends_again_and_the_first_link_still_accepts(db: Db) {
        // The first connection stores the message and hangs up without the 250 reply.
        let smtp = SmtpServer::misbehaving(Misbehaviour::CloseAfterData, 1).await;
        let url = smtp.url();
        let app = spawn_app_with(db, |args| {
            args.smtp_url = Some(Secret::new(url));
            args.mail_retry_initial_ms = 20;
        })
        .await;
        let team = app.create_team("Core").await;
        let (_, body) = app.invite(&team, &["alice@example.com"]).await;
        let id = invitation_id(&body, 0);
        let queued = app.get_json(&format!("/teams/{team}/invitations/{id}")).await;
        let sent = app.invitation_until(&team, &id, "delivery sent", |i| i["delivery"]["status"] == "sent").await;
        assert_eq!(sent["delivery"]["attempts"], 2);
        // One rule for expiry: fixed at invitation time, not moved by each attempt.
        assert_eq!(sent["expires_at"], queued["expires_at"]);
        let messages = smtp.received();
        assert_eq!(messages.len(), 2, "the person got the mail twice");
        let first = token_in(&messages[0], &app.frontend_url);
        let second = token_in(&messages[1], &app.frontend_url);
        assert_ne!(first, second);
        // Both links work until one is used: the first one the person opens wins.
        let preview = app.public(Method::POST, "/invitations/preview")
            .json(&serde_json::json!({ "token": second })).send().await.unwrap();
        assert_eq!(preview.status(), StatusCode::OK);
        assert_eq!(app.accept(&first).await.status(), StatusCode::OK);
        assert_eq!(app.accept(&second).await.status(), StatusCode::GONE);
        app.stop().await;
    }

    async fn a_550_reply_ends_the_delivery_as_failed_at_once_and_audits_it(db: Db) {
        let smtp = SmtpServer::misbehaving(Misbehaviour::Reject550, usize::MAX).await;
        let url = smtp.url();
        let app = spawn_app_with(db, |args| {
            args.smtp_url = Some(Secret::new(url));
            args.mail_retry_initial_ms = 20;
        })
        .await;
        let team = app.create_team("Core").await;
        let (_, body) = app.invite(&team, &["nobody@example.com"]).await;
        let id = invitation_id(&body, 0);
        let failed = app.invitation_until(&team, &id, "delivery failed", |i| i["delivery"]["status"] == "failed").await;
        assert_eq!(failed["delivery"]["attempts"], 1);
        assert!(failed["delivery"]["last_error"].as_str().unwrap().contains("550"), "{failed}");
        assert!(failed["delivery"]["next_attempt_at"].is_null());
        assert_eq!(failed["status"], "pending");
        assert_eq!(smtp.connection_count(), 1, "a permanent error is not retried");
        assert!(app.audit_actions(&team).await.contains(&"invitation.delivery_failed".to_owned()));
        assert_eq!(app.metric("teams_mail_given_up_total"), 1.0);
        app.stop().await;
    }

    async fn mail_max_attempts_failures_end_in_failed_and_the_token_rows_stay_bounded(db: Db) {
        // A port that refuses connections: every attempt fails.
        let reserved = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = reserved.local_addr().unwrap();
        drop(reserved);
        let app = spawn_app_with(db, |args| {
            args.smtp_url = Some(Secret::new(format!("smtp://{addr}")));
            args.mail_retry_initial_ms = 10;
            args.mail_retry_max_ms = 20;
            args.mail_max_attempts = 3;
        })
        .await;
        let team = app.create_team("Core").await;
        let (_, body) = app.invite(&team, &["alice@example.com"]).await;
        let id = invitation_id(&body, 0);
        let failed = app.invitation_until(&team, &id, "delivery failed", |i| i["delivery"]["status"] == "failed").await;
        assert_eq!(failed["delivery"]["attempts"], 3);
        let mut connection = app.database().await;
        let tokens: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM invitation_tokens WHERE invitation_id = $1")
            .bind(&id).fetch_one(&mut connection).await.unwrap();
        assert_eq!(tokens, 3, "one token per attempt, and no more attempts");
        assert!(app.metric("teams_mail_retries_total") >= 2.0);
        app.stop().await;
    }

    async fn two_processes_on_one_database_mail_each_invitation_once(db: Db) {
        let smtp = SmtpServer::start().await;
        let url = smtp.url();
        let second_url = url.clone();
        let first = spawn_app_with(db, |args| args.smtp_url = Some(Secret::new(url))).await;
        let second = spawn_second_app(&first, |args| args.smtp_url = Some(Secret::new(second_url))).await;
        let team = first.create_team("Core").await;
        let emails: Vec<String> = (0..60).map(|n| format!("person{n:02}@example.com")).collect();
        let (a, b) = emails.split_at(30);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let b: Vec<&str> = b.iter().map(String::as_str).collect();
        // Each process hears of half of the invitations; both workers poll the database.
        let (first_batch, second_batch) = tokio::join!(first.invite(&team, &a), second.invite(&team, &b));
        assert_eq!(first_batch.0, StatusCode::MULTI_STATUS);
        assert_eq!(second_batch.0, StatusCode::MULTI_STATUS);
        let received = eventually("sixty messages", || {
            let received = smtp.received();
            async move { (received.len() >= 60).then_some(received) }
        })
        .await;
        let list_path = format!("/teams/{team}/invitations?limit=200");
        eventually("every delivery recorded as sent", || async {
            let list: Value = first.admin(Method::GET, &list_path).send().await.ok()?.json().await.ok()?;
            list["invitations"].as_array()?.iter().all(|i| i["delivery"]["status"] == "sent").then_some(())
        })
        .await;
        let mut per_recipient: HashMap<String, usize> = HashMap::new();
        for message in smtp.received() {
            *per_recipient.entry(recipient_of(&message)).or_default() += 1;
        }
        assert_eq!(received.len(), 60);
        assert_eq!(per_recipient.len(), 60);
        assert!(per_recipient.values().all(|count| *count == 1), "{per_recipient:?}");
        second.stop().await;
        first.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_send_held_by_a_silent_server_ends_within_the_send_timeout() {
    let smtp = SmtpServer::misbehaving(Misbehaviour::Silent, usize::MAX).await;
    let url = smtp.url();
    let app = spawn_app_with(Db::Sqlite, |args| {
        args.smtp_url = Some(Secret::new(url));
        args.mail_send_timeout_seconds = 2;
    })
    .await;
    let team = app.create_team("Core").await;
    app.invite(&team, &["alice@example.com"]).await;
    eventually("the silent connection", || async {
        (smtp.connection_count() >= 1).then_some(())
    })
    .await;
    // A guard, not a measurement: without the bound this would wait forever.
    tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("shutdown is bounded by the send timeout");
}

both_databases! {
    async fn the_worker_never_mails_an_invitation_of_a_deleted_team(db: Db) {
        // SMTP down at first, so the invitation waits in the queue (its retry a minute away, so
        // the worker leaves it alone while the test changes it).
        let reserved = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = reserved.local_addr().unwrap();
        drop(reserved);
        let app = spawn_app_with(db, |args| {
            args.smtp_url = Some(Secret::new(format!("smtp://{addr}")));
            args.mail_retry_initial_ms = 60_000;
        })
        .await;
        let gone = app.create_team("Gone").await;
        let (_, body) = app.invite(&gone, &["orphan@example.com"]).await;
        let orphan = invitation_id(&body, 0);
        app.invitation_until(&gone, &orphan, "a failed attempt", |i| i["delivery"]["status"] == "failing").await;
        // The state a delete racing the worker could leave: the team deleted, the invitation
        // still pending, and due at once.
        let mut connection = app.database().await;
        sqlx::query("UPDATE teams SET deleted_at = 1 WHERE id = $1").bind(&gone).execute(&mut connection).await.unwrap();
        sqlx::query("UPDATE invitations SET delivery_next_attempt_at = 0 WHERE id = $1").bind(&orphan).execute(&mut connection).await.unwrap();
        let smtp = SmtpServer::start_on(tokio::net::TcpListener::bind(addr).await.unwrap()).await;
        // A round that would take the orphan if it were deliverable: it is due earlier.
        let live = app.create_team("Live").await;
        app.invite(&live, &["control@example.com"]).await;
        let received = eventually("the control message", || {
            let received = smtp.received();
            async move { (!received.is_empty()).then_some(received) }
        })
        .await;
        let recipients: Vec<String> = received.iter().map(|m| recipient_of(m)).collect();
        assert_eq!(recipients, ["control@example.com"]);
        let attempts: i64 = sqlx::query_scalar("SELECT delivery_attempts FROM invitations WHERE id = $1")
            .bind(&orphan).fetch_one(&mut connection).await.unwrap();
        let status: String = sqlx::query_scalar("SELECT delivery_status FROM invitations WHERE id = $1")
            .bind(&orphan).fetch_one(&mut connection).await.unwrap();
        assert_eq!(status, "failing", "never sent");
        assert!(attempts >= 1);
        app.stop().await;
    }
}
