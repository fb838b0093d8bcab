//! Hostile input over real HTTP: SQL metacharacters, CRLF (mail header injection), overlong
//! values, invalid UTF-8, duplicate JSON keys, wrong types and an oversized `Authorization`
//! header. Every refusal is an RFC 9457 problem with a precise 4xx status, and nothing else is
//! affected.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use teams::Secret;

use crate::both_databases;
use crate::support::{Db, SmtpServer, TestApp, eventually, spawn_app, spawn_app_with, token_in};

/// Asserts `response` is a problem with `status`, and returns its body.
async fn assert_problem(response: reqwest::Response, status: StatusCode, what: &str) -> Value {
    assert_eq!(response.status(), status, "{what}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16(), "{what}: {body}");
    assert!(body["type"].as_str().is_some(), "{what}: {body}");
    assert!(body["detail"].as_str().is_some(), "{what}: {body}");
    body
}

async fn live_team_names(app: &TestApp) -> Vec<String> {
    let list: Value = app
        .admin(Method::GET, "/teams?limit=200")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|team| team["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Every string the API takes, laced with SQL metacharacters of both dialects.
const SQL_NAME: &str = "Robert'); DROP TABLE teams;-- \"x\" \\ % _ $1 $$ /* */";
const SQL_DESCRIPTION: &str = "' OR '1'='1'; DELETE FROM members WHERE ''=''; -- \\x27 `id` ?";
const SQL_EMAILS: [&str; 3] = [
    "o'brien--@example.com",
    "x$1%_*@example.com",
    "a=b|c{d}'or'1'='1@example.com",
];

both_databases! {
    async fn sql_metacharacters_in_every_string_field_are_stored_and_returned_verbatim(db: Db) {
        let app = spawn_app(db).await;
        let bystander = app.create_team("Bystander").await;

        let created = app.admin(Method::POST, "/teams")
            .json(&json!({"name": SQL_NAME, "description": SQL_DESCRIPTION}))
            .send().await.unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let created: Value = created.json().await.unwrap();
        assert_eq!(created["name"], SQL_NAME);
        assert_eq!(created["description"], SQL_DESCRIPTION);
        let team = created["id"].as_str().unwrap().to_owned();
        let read: Value = app.admin(Method::GET, &format!("/teams/{team}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(read["name"], SQL_NAME);
        assert_eq!(read["description"], SQL_DESCRIPTION);

        // The same name again is a conflict with that one team, not a match on anything else.
        let again = app.admin(Method::POST, "/teams").json(&json!({"name": SQL_NAME})).send().await.unwrap();
        assert_problem(again, StatusCode::CONFLICT, "same name").await;
        let renamed_name = "x' OR 1=1 --";
        let patched = app.admin(Method::PATCH, &format!("/teams/{team}"))
            .json(&json!({"name": renamed_name, "description": "'; UPDATE teams SET name='pwned'; --"}))
            .send().await.unwrap();
        assert_eq!(patched.status(), StatusCode::OK);
        let mut names = live_team_names(&app).await;
        names.sort();
        assert_eq!(names, vec!["Bystander".to_owned(), renamed_name.to_owned()]);

        // Emails: quotes, dollars, percent and underscores are legal in the local part.
        let (status, batch) = app.invite(&team, &SQL_EMAILS).await;
        assert_eq!(status, StatusCode::MULTI_STATUS, "{batch}");
        for (result, email) in batch["results"].as_array().unwrap().iter().zip(SQL_EMAILS) {
            assert_eq!(result["status"], "invited", "{batch}");
            assert_eq!(result["email"], email);
        }
        // A role is one of two words; anything else is a 400 and invites nobody.
        let role = app.admin(Method::POST, &format!("/teams/{team}/invitations"))
            .json(&json!({"emails": ["eve@example.com"], "role": "admin' --"}))
            .send().await.unwrap();
        assert_problem(role, StatusCode::BAD_REQUEST, "role with SQL").await;

        // Tokens: a metacharacter token matches nothing.
        for token in ["' OR '1'='1", "x' UNION SELECT token_hash FROM invitation_tokens --", "%", "_"] {
            let preview = app.public(Method::POST, "/invitations/preview").json(&json!({"token": token})).send().await.unwrap();
            assert_problem(preview, StatusCode::NOT_FOUND, token).await;
            assert_problem(app.accept(token).await, StatusCode::NOT_FOUND, token).await;
        }
        // Cursors and path ids with SQL in them name nothing.
        let cursor = app.admin(Method::GET, "/teams?cursor=%27%20OR%201%3D1--").send().await.unwrap();
        assert_problem(cursor, StatusCode::BAD_REQUEST, "cursor").await;
        let path = app.admin(Method::GET, "/teams/1%27%20OR%20%271%27%3D%271").send().await.unwrap();
        assert_problem(path, StatusCode::NOT_FOUND, "path id").await;

        // The mail goes to the exact address; its token makes that exact member.
        let messages = app.mail_files(3).await;
        let message = messages.iter().find(|m| m.contains("To: o'brien--@example.com")).expect("mail to o'brien");
        let accepted = app.accept(&token_in(message, &app.frontend_url)).await;
        assert_eq!(accepted.status(), StatusCode::OK);
        let members: Value = app.admin(Method::GET, &format!("/teams/{team}/members")).send().await.unwrap().json().await.unwrap();
        assert_eq!(members["members"].as_array().unwrap().len(), 1);
        assert_eq!(members["members"][0]["email"], "o'brien--@example.com");
        let invitations: Value = app.admin(Method::GET, &format!("/teams/{team}/invitations")).send().await.unwrap().json().await.unwrap();
        let mut emails: Vec<&str> = invitations["invitations"].as_array().unwrap().iter().map(|i| i["email"].as_str().unwrap()).collect();
        emails.sort();
        let mut expected = SQL_EMAILS.to_vec();
        expected.sort();
        assert_eq!(emails, expected);
        // Nothing happened to the other team.
        let bystander: Value = app.admin(Method::GET, &format!("/teams/{bystander}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(bystander["name"], "Bystander");
        app.stop().await;
    }

    async fn crlf_in_team_names_and_emails_cannot_inject_mail_headers(db: Db) {
        let smtp = SmtpServer::start().await;
        let smtp_url = format!("smtp://{}", smtp.addr);
        let app = spawn_app_with(db, |args| args.smtp_url = Some(Secret::new(smtp_url))).await;
        for name in [
            "Core\r\nBcc: evil@example.com",
            "Core\nBcc: evil@example.com",
            "Core\rBcc: evil@example.com",
            "Core\u{85}Bcc: evil@example.com",
            "Core\u{2028}Bcc: evil@example.com",
            "Core\u{2029}Bcc: evil@example.com",
        ] {
            let created = app.admin(Method::POST, "/teams").json(&json!({"name": name})).send().await.unwrap();
            assert_problem(created, StatusCode::BAD_REQUEST, &format!("create {name:?}")).await;
        }
        let team = app.create_team("Core").await;
        let patched = app.admin(Method::PATCH, &format!("/teams/{team}"))
            .json(&json!({"name": "Core\r\nBcc: evil@example.com"}))
            .send().await.unwrap();
        assert_problem(patched, StatusCode::BAD_REQUEST, "patch").await;

        let (status, batch) = app.invite(&team, &[
            "alice@example.com\r\nBcc: evil@example.com",
            "alice@example.com\nX-Injected: yes",
            "alice@example.com\r\n\r\nInjected body",
            "carol@example.com",
        ]).await;
        assert_eq!(status, StatusCode::MULTI_STATUS);
        let statuses: Vec<&str> = batch["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["invalid_email", "invalid_email", "invalid_email", "invited"], "{batch}");

        let messages = eventually("one message over SMTP", || {
            let received = smtp.received();
            async move { (!received.is_empty()).then_some(received) }
        }).await;
        assert_eq!(smtp.recipients.lock().unwrap().clone(), ["<carol@example.com>"]);
        let message = &messages[0];
        let headers = message.split("\r\n\r\n").next().unwrap();
        for forbidden in ["Bcc:", "X-Injected", "evil@"] {
            assert!(!message.contains(forbidden), "{forbidden} in:\n{message}");
        }
        let subjects = headers.lines().filter(|line| line.starts_with("Subject:")).count();
        assert_eq!(subjects, 1, "{headers}");
        assert!(headers.contains("Subject: You are invited to join Core\r\n"), "{headers}");
        app.stop().await;
    }

    async fn ten_thousand_character_values_get_a_400_problem_naming_the_limit(db: Db) {
        let app = spawn_app(db).await;
        for long in ["x".repeat(10_000), "語".repeat(10_000)] {
            let created = app.admin(Method::POST, "/teams").json(&json!({"name": long})).send().await.unwrap();
            let body = assert_problem(created, StatusCode::BAD_REQUEST, "long name").await;
            let detail = body["detail"].as_str().unwrap();
            assert!(detail.contains("100 characters"), "{detail}");
            assert!(detail.len() < 200, "the detail does not echo the value: {detail}");
            let described = app.admin(Method::POST, "/teams").json(&json!({"name": "Long", "description": long})).send().await.unwrap();
            let body = assert_problem(described, StatusCode::BAD_REQUEST, "long description").await;
            assert!(body["detail"].as_str().unwrap().contains("1000 characters"), "{body}");
        }
        assert!(live_team_names(&app).await.is_empty());
        // At the documented limit, the name is stored whole.
        let longest = "é".repeat(domain_limit());
        let created = app.admin(Method::POST, "/teams").json(&json!({"name": longest})).send().await.unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let team = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        assert_eq!(live_team_names(&app).await, [longest]);
        let patched = app.admin(Method::PATCH, &format!("/teams/{team}")).json(&json!({"name": "y".repeat(10_000)})).send().await.unwrap();
        assert_problem(patched, StatusCode::BAD_REQUEST, "long patch").await;

        let long_email = format!("{}@example.com", "a".repeat(10_000));
        let (status, batch) = app.invite(&team, &[&long_email]).await;
        assert_eq!(status, StatusCode::MULTI_STATUS);
        assert_eq!(batch["results"][0]["status"], "invalid_email");
        let long_token = "t".repeat(10_000);
        assert_problem(app.accept(&long_token).await, StatusCode::NOT_FOUND, "long token").await;
        let long_id = app.admin(Method::GET, &format!("/teams/{}", "9".repeat(10_000))).send().await.unwrap();
        let body = assert_problem(long_id, StatusCode::NOT_FOUND, "long id").await;
        assert!(body["detail"].as_str().unwrap().len() < 200, "{body}");
        app.stop().await;
    }

    async fn invalid_utf8_bodies_get_a_400_problem_and_change_nothing(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        let bodies: [&[u8]; 4] = [
            b"{\"name\": \"\xff\xfe\"}",
            b"{\"name\": \"Core\xc3\"}",
            b"{\"name\": \"\xed\xa0\x80\"}",
            b"{\"name\": \"\\ud800\"}",
        ];
        for body in bodies {
            for (method, path) in [
                (Method::POST, "/teams".to_owned()),
                (Method::PATCH, format!("/teams/{team}")),
            ] {
                let response = app.raw_json(method, &path, body.to_vec()).await;
                assert_problem(response, StatusCode::BAD_REQUEST, &format!("{path} {body:?}")).await;
            }
        }
        let emails = app.raw_json(Method::POST, &format!("/teams/{team}/invitations"), b"{\"emails\": [\"a\xff@example.com\"]}".to_vec()).await;
        assert_problem(emails, StatusCode::BAD_REQUEST, "emails").await;
        for path in ["/invitations/accept", "/invitations/preview"] {
            let response = app.raw_json(Method::POST, path, b"{\"token\": \"\xc0\xaf\"}".to_vec()).await;
            assert_problem(response, StatusCode::BAD_REQUEST, path).await;
        }
        assert_eq!(live_team_names(&app).await, ["Core"]);
        app.stop().await;
    }

    async fn duplicate_json_keys_are_rejected_with_a_400_problem(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        let cases = [
            (Method::POST, "/teams".to_owned(), r#"{"name": "A", "name": "B"}"#),
            (Method::POST, "/teams".to_owned(), r#"{"name": "A", "description": "x", "description": "y"}"#),
            (Method::PATCH, format!("/teams/{team}"), r#"{"name": "A", "name": "B"}"#),
            (Method::PATCH, format!("/teams/{team}"), r#"{"description": "x", "description": null}"#),
            (Method::POST, format!("/teams/{team}/invitations"), r#"{"emails": ["a@example.com"], "emails": ["b@example.com"]}"#),
            (Method::POST, format!("/teams/{team}/invitations"), r#"{"emails": ["a@example.com"], "role": "member", "role": "admin"}"#),
            (Method::POST, "/invitations/accept".to_owned(), r#"{"token": "a", "token": "b"}"#),
            (Method::POST, "/invitations/preview".to_owned(), r#"{"token": "a", "token": "b"}"#),
        ];
        for (method, path, body) in cases {
            let response = app.raw_json(method, &path, body).await;
            let problem = assert_problem(response, StatusCode::BAD_REQUEST, body).await;
            assert!(problem["detail"].as_str().unwrap().contains("duplicate field"), "{problem}");
        }
        assert_eq!(live_team_names(&app).await, ["Core"]);
        let invitations: Value = app.admin(Method::GET, &format!("/teams/{team}/invitations")).send().await.unwrap().json().await.unwrap();
        assert!(invitations["invitations"].as_array().unwrap().is_empty());
        app.stop().await;
    }

    async fn wrong_types_get_a_400_problem(db: Db) {
        let app = spawn_app(db).await;
        let team = app.create_team("Core").await;
        let invitations = format!("/teams/{team}/invitations");
        let team_path = format!("/teams/{team}");
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let cases: Vec<(Method, &str, String)> = vec![
            (Method::POST, "/teams", r#"{"name": 5}"#.into()),
            (Method::POST, "/teams", r#"{"name": null}"#.into()),
            (Method::POST, "/teams", r#"{"name": ["Core"]}"#.into()),
            (Method::POST, "/teams", r#"{"name": {"$ne": ""}}"#.into()),
            (Method::POST, "/teams", r#"{"name": "A", "description": 1}"#.into()),
            (Method::POST, "/teams", r#"{}"#.into()),
            (Method::POST, "/teams", r#"[]"#.into()),
            (Method::POST, "/teams", r#""Core""#.into()),
            (Method::POST, "/teams", "null".into()),
            (Method::POST, "/teams", "".into()),
            (Method::POST, "/teams", r#"{"name": "A"} trailing"#.into()),
            (Method::POST, "/teams", r#"{"name": "A", "admin": true}"#.into()),
            (Method::POST, "/teams", deep),
            (Method::POST, &invitations, r#"{"emails": "a@example.com"}"#.into()),
            (Method::POST, &invitations, r#"{"emails": [1, 2]}"#.into()),
            (Method::POST, &invitations, r#"{"emails": [null]}"#.into()),
            (Method::POST, &invitations, r#"{"emails": ["a@example.com"], "role": 1}"#.into()),
            (Method::POST, &invitations, r#"{"emails": ["a@example.com"], "role": "superuser"}"#.into()),
            (Method::POST, "/invitations/accept", r#"{"token": 123}"#.into()),
            (Method::POST, "/invitations/accept", r#"{"token": null}"#.into()),
            (Method::POST, "/invitations/accept", r#"{"token": ["a"]}"#.into()),
            (Method::POST, "/invitations/preview", r#"{"token": true}"#.into()),
            // serde reads a struct from an array of its fields in order; bodies are objects.
            (Method::POST, "/teams", r#"["Arrayed"]"#.into()),
            (Method::POST, "/teams", r#"["Arrayed", "by position"]"#.into()),
            (Method::PATCH, &team_path, r#"[null, null]"#.into()),
            (Method::PATCH, &team_path, r#"["Renamed by position"]"#.into()),
            (Method::POST, &invitations, r#"[["b@example.com"]]"#.into()),
            (Method::POST, "/invitations/accept", r#"["a-token"]"#.into()),
        ];
        for (method, path, body) in cases {
            let what = format!("{method} {path} {}", body.chars().take(60).collect::<String>());
            let response = app.raw_json(method, path, body).await;
            assert_problem(response, StatusCode::BAD_REQUEST, &what).await;
        }
        for query in ["limit=abc", "limit=-1", "limit=4294967296", "limit=1.5", "limit=0"] {
            let response = app.admin(Method::GET, &format!("/teams?{query}")).send().await.unwrap();
            assert_problem(response, StatusCode::BAD_REQUEST, query).await;
        }
        let not_json = app.admin(Method::POST, "/teams").header("content-type", "text/plain").body(r#"{"name": "A"}"#).send().await.unwrap();
        assert_problem(not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE, "text/plain").await;
        assert_eq!(live_team_names(&app).await, ["Core"]);
        app.stop().await;
    }
}

fn domain_limit() -> usize {
    teams::domain::TEAM_NAME_MAX_CHARS
}

/// Sends a request with an `Authorization` header of `size` bytes on a fresh connection and
/// returns its status, or `None` when the server closed the connection instead of answering.
async fn status_with_authorization_of(app: &TestApp, path: &str, size: usize) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let value = format!("Bearer {}", "a".repeat(size.saturating_sub(7)));
    match client
        .get(format!("{}{path}", app.base))
        .header("authorization", value)
        .send()
        .await
    {
        Ok(response) => Some(response.status().as_u16()),
        Err(error) => {
            assert!(!error.is_timeout(), "the server hung: {error}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_authorization_header_gets_a_clean_4xx_and_never_a_hang() {
    let app = spawn_app(Db::Sqlite).await;
    // Larger than the service's own header limit but within hyper's buffer: a 431 problem.
    let response = app
        .client
        .get(format!("{}/teams", app.base))
        .header("authorization", format!("Bearer {}", "a".repeat(64 * 1024)))
        .send()
        .await
        .unwrap();
    assert_problem(
        response,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "64 KiB",
    )
    .await;
    // 1 MiB is refused by the HTTP server itself before any route runs: a 431 (or a closed
    // connection), never a 5xx and never a hang.
    let status = status_with_authorization_of(&app, "/teams", 1024 * 1024).await;
    assert!(matches!(status, None | Some(431)), "{status:?}");
    let status = status_with_authorization_of(&app, "/invitations/accept", 1024 * 1024).await;
    assert!(matches!(status, None | Some(431)), "{status:?}");
    // A header just over the limit on a public route is refused too; a wrong small one is 401.
    let status = status_with_authorization_of(&app, "/teams", 9 * 1024).await;
    assert_eq!(status, Some(431));
    let status = status_with_authorization_of(&app, "/teams", 100).await;
    assert_eq!(status, Some(401));
    // The server still answers.
    app.create_team("Still here").await;
    app.stop().await;
}

both_databases! {
    async fn a_nul_character_in_any_string_field_gets_a_400_problem_never_a_500(db: Db) {
        let app = spawn_app(db).await;
        let created = app.admin(Method::POST, "/teams").json(&json!({"name": "Core", "description": "before\u{0}after"})).send().await.unwrap();
        assert_problem(created, StatusCode::BAD_REQUEST, "NUL in description").await;
        let created = app.admin(Method::POST, "/teams").json(&json!({"name": "Co\u{0}re"})).send().await.unwrap();
        assert_problem(created, StatusCode::BAD_REQUEST, "NUL in name").await;
        let team = app.create_team("Core").await;
        let patched = app.admin(Method::PATCH, &format!("/teams/{team}")).json(&json!({"description": "\u{0}"})).send().await.unwrap();
        assert_problem(patched, StatusCode::BAD_REQUEST, "NUL in patched description").await;
        let (status, batch) = app.invite(&team, &["a\u{0}@example.com"]).await;
        assert_eq!(status, StatusCode::MULTI_STATUS);
        assert_eq!(batch["results"][0]["status"], "invalid_email");
        assert_problem(app.accept("tok\u{0}en").await, StatusCode::NOT_FOUND, "NUL in token").await;
        // Line breaks and tabs stay allowed in a description, and come back verbatim.
        let multiline = "line one\r\nline two\n\ttabbed";
        let patched = app.admin(Method::PATCH, &format!("/teams/{team}")).json(&json!({"description": multiline})).send().await.unwrap();
        assert_eq!(patched.status(), StatusCode::OK);
        let read: Value = app.admin(Method::GET, &format!("/teams/{team}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(read["description"], multiline);
        app.stop().await;
    }
}
