//! Delivery over a real SMTP server on a loopback port.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use teams::Secret;
use tokio::net::TcpListener;

use crate::support::{Db, SmtpServer, eventually, recipient_of, spawn_app_with, token_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_arrives_over_smtp_with_a_frontend_link_whose_token_accepts() {
    let smtp = SmtpServer::start().await;
    let smtp_url = format!("smtp://{}", smtp.addr);
    let app = spawn_app_with(Db::Sqlite, |args| {
        args.smtp_url = Some(Secret::new(smtp_url));
        args.frontend_url = Some("https://app.example.com/".into());
        args.mail_from = Some("Logbook <noreply@example.com>".into());
    })
    .await;
    assert_eq!(app.frontend_url, "https://app.example.com");
    let team = app.create_team("Core").await;
    app.invite(&team, &["alice@example.com"]).await;
    let messages = eventually("one message over SMTP", || {
        let received = smtp.received();
        async move { (!received.is_empty()).then_some(received) }
    })
    .await;
    let message = &messages[0];
    assert!(message.contains("https://app.example.com/invite#token="));
    assert!(message.contains("text/plain") && message.contains("text/html"));
    assert!(message.contains("Core"));
    assert_eq!(recipient_of(message), "alice@example.com");
    let token = token_in(message, "https://app.example.com");
    assert_eq!(app.accept(&token).await.status(), StatusCode::OK);

    // The outcome is recorded right after the server's final reply.
    let path = format!("/teams/{team}/invitations");
    let list: Value = eventually("the delivery recorded", || async {
        let list: Value = app
            .admin(Method::GET, &path)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (list["invitations"][0]["delivery"]["status"] != "queued").then_some(list)
    })
    .await;
    assert_eq!(list["invitations"][0]["delivery"]["status"], "sent");
    assert_eq!(list["invitations"][0]["delivery"]["attempts"], 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_smtp_down_invitations_queue_and_all_arrive_once_it_is_up() {
    // Reserve a port, then close it: connections are refused until the server starts there.
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let app = spawn_app_with(Db::Sqlite, |args| {
        args.smtp_url = Some(Secret::new(format!("smtp://{addr}")));
        args.mail_retry_initial_ms = 50;
        args.mail_retry_max_ms = 200;
    })
    .await;
    let team = app.create_team("Core").await;
    let emails: Vec<String> = (0..5).map(|n| format!("queued{n}@example.com")).collect();
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    app.invite(&team, &refs).await;

    let list_path = format!("/teams/{team}/invitations");
    eventually("every delivery failing with an error recorded", || async {
        let list: Value = app
            .admin(Method::GET, &list_path)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let all = list["invitations"].as_array()?;
        all.iter()
            .all(|i| {
                i["delivery"]["status"] == "failing"
                    && i["delivery"]["attempts"].as_i64() >= Some(1)
                    && i["delivery"]["last_error"].is_string()
            })
            .then_some(())
    })
    .await;

    let smtp = SmtpServer::start_on(TcpListener::bind(addr).await.unwrap()).await;
    let messages = eventually("all five messages after SMTP came up", || {
        let received = smtp.received();
        async move { (received.len() >= 5).then_some(received) }
    })
    .await;
    let mut recipients: Vec<String> = messages.iter().map(|m| recipient_of(m)).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients, emails);
    // The token of each delivered message is the one that works.
    eventually("every delivery recorded as sent", || async {
        let list: Value = app
            .admin(Method::GET, &list_path)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        list["invitations"]
            .as_array()?
            .iter()
            .all(|i| i["delivery"]["status"] == "sent")
            .then_some(())
    })
    .await;
    let last = messages.last().unwrap();
    assert_eq!(
        app.accept(&token_in(last, &app.frontend_url))
            .await
            .status(),
        StatusCode::OK
    );
    app.stop().await;
}
