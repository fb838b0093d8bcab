//! No token and no admin secret ever reaches the logs: every log line of a full invite ->
//! mail (over SMTP) -> preview -> accept -> resend -> accept flow, at TRACE level for every
//! target (the service, sqlx, lettre, tower-http, hyper, and `log` records bridged in), is
//! captured into a buffer and searched for the secrets.
//!
//! Its own test binary: the capturing subscriber is process-global, and TRACE everywhere
//! would slow the other tests down.

#[path = "api/support.rs"]
#[allow(dead_code, unused_macros)]
mod support;

use std::io;
use std::sync::{Arc, Mutex};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Db, SmtpServer, eventually, spawn_app_with, token_in};
use teams::Secret;
use tracing_subscriber::fmt::format::FmtSpan;

/// Everything every subscriber layer writes, in one shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_admin_secret_appears_in_trace_logs_of_a_full_invitation_flow() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::FULL)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber of this test binary");

    let smtp = SmtpServer::start().await;
    let smtp_url = format!("smtp://{}", smtp.addr);
    let app = spawn_app_with(Db::Sqlite, |args| {
        args.smtp_url = Some(Secret::new(smtp_url));
        args.invite_resend_interval_seconds = 0;
    })
    .await;
    let team = app.create_team("Core").await;
    let (_, batch) = app.invite(&team, &["alice@example.com"]).await;
    let invitation = batch["results"][0]["invitation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = eventually("the first message", || {
        let received = smtp.received();
        async move { (received.len() == 1).then(|| received[0].clone()) }
    })
    .await;
    let first_token = token_in(&first, &app.frontend_url);
    let preview = app
        .public(Method::POST, "/invitations/preview")
        .json(&json!({ "token": first_token }))
        .send()
        .await
        .unwrap();
    assert_eq!(preview.status(), StatusCode::OK);

    // Resend: a new token by mail; the old one is refused (410), the new one accepted.
    let resent = app
        .admin(
            Method::POST,
            &format!("/teams/{team}/invitations/{invitation}/resend"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resent.status(), StatusCode::ACCEPTED);
    let second = eventually("the resent message", || {
        let received = smtp.received();
        async move { (received.len() == 2).then(|| received[1].clone()) }
    })
    .await;
    let second_token = token_in(&second, &app.frontend_url);
    assert_ne!(first_token, second_token);
    assert_eq!(app.accept(&first_token).await.status(), StatusCode::GONE);
    let accepted = app.accept(&second_token).await;
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_eq!(app.accept(&second_token).await.status(), StatusCode::GONE);

    // A wrong admin token and a wrong invitation token are secrets as well.
    let wrong_admin = "wrong-admin-token-that-must-not-be-logged-0123456789";
    let refused = app
        .client
        .get(format!("{}/teams", app.base))
        .bearer_auth(wrong_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let wrong_token = "guessed-token-that-must-not-be-logged-0123456789abc";
    assert_eq!(
        app.accept(wrong_token).await.status(),
        StatusCode::NOT_FOUND
    );
    let members: Value = app
        .admin(Method::GET, &format!("/teams/{team}/members"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(members["members"].as_array().unwrap().len(), 1);
    app.stop().await;

    let logs = captured.text();
    // The capture really saw the flow, at every level and from the libraries.
    for expected in [
        "invitation mail sent",
        "request{method=POST",
        "TRACE",
        "sqlx::query",
        "/invitations/accept",
    ] {
        assert!(
            logs.contains(expected),
            "the capture lacks {expected:?}; it is not seeing the flow:\n{logs}"
        );
    }
    for (what, secret) in [
        ("the admin token", ADMIN_TOKEN),
        ("a wrong admin token", wrong_admin),
        ("the first invitation token", first_token.as_str()),
        ("the resent invitation token", second_token.as_str()),
        ("a guessed token", wrong_token),
    ] {
        if let Some(at) = logs.find(secret) {
            let line = logs[..at].rsplit('\n').next().unwrap_or_default();
            panic!("{what} appears in the logs, on the line starting: {line}");
        }
    }
}
