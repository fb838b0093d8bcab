//! Teams CRUD, soft delete, pagination, admin auth and HTTP hygiene.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_databases;
use crate::support::{Db, spawn_app};

both_databases! {
    async fn creating_a_team_returns_201_and_it_reads_back(db: Db) {
        let app = spawn_app(db).await;
        let response = app.admin(Method::POST, "/teams")
            .json(&json!({"name": "  Core Team ", "description": "the core"}))
            .send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let created: Value = response.json().await.unwrap();
        assert_eq!(created["name"], "Core Team");
        let id = created["id"].as_str().unwrap();
        let read: Value = app.admin(Method::GET, &format!("/teams/{id}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(read["description"], "the core");
        app.stop().await;
    }

    async fn a_second_live_team_with_the_same_name_in_other_case_is_a_409_problem(db: Db) {
        let app = spawn_app(db).await;
        app.create_team("Core").await;
        let response = app.admin(Method::POST, "/teams").json(&json!({"name": "CORE"})).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "/problems/conflict");
        app.stop().await;
    }

    async fn deleting_a_team_hides_it_and_frees_its_name(db: Db) {
        let app = spawn_app(db).await;
        let id = app.create_team("Core").await;
        let deleted = app.admin(Method::DELETE, &format!("/teams/{id}")).send().await.unwrap();
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        let read = app.admin(Method::GET, &format!("/teams/{id}")).send().await.unwrap();
        assert_eq!(read.status(), StatusCode::NOT_FOUND);
        let again = app.admin(Method::DELETE, &format!("/teams/{id}")).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::NOT_FOUND);
        let list: Value = app.admin(Method::GET, "/teams").send().await.unwrap().json().await.unwrap();
        assert_eq!(list["teams"].as_array().unwrap().len(), 0);
        let new_id = app.create_team("core").await;
        assert_ne!(new_id, id);
        app.stop().await;
    }

    async fn patching_a_team_changes_only_the_given_fields_and_checks_the_name(db: Db) {
        let app = spawn_app(db).await;
        let id = app.create_team("Core").await;
        app.create_team("Other").await;
        let patched: Value = app.admin(Method::PATCH, &format!("/teams/{id}"))
            .json(&json!({"description": "now described"})).send().await.unwrap().json().await.unwrap();
        assert_eq!(patched["name"], "Core");
        assert_eq!(patched["description"], "now described");
        let clash = app.admin(Method::PATCH, &format!("/teams/{id}"))
            .json(&json!({"name": "other"})).send().await.unwrap();
        assert_eq!(clash.status(), StatusCode::CONFLICT);
        let renamed: Value = app.admin(Method::PATCH, &format!("/teams/{id}"))
            .json(&json!({"name": "Renamed", "description": null})).send().await.unwrap().json().await.unwrap();
        assert_eq!(renamed["name"], "Renamed");
        assert_eq!(renamed["description"], Value::Null);
        app.stop().await;
    }

    async fn listing_teams_walks_every_page_once_with_the_cursor(db: Db) {
        let app = spawn_app(db).await;
        let mut created = Vec::new();
        for n in 0..7 {
            created.push(app.create_team(&format!("team {n}")).await);
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/teams?limit=3&cursor={c}"),
                None => "/teams?limit=3".to_owned(),
            };
            let page: Value = app.admin(Method::GET, &path).send().await.unwrap().json().await.unwrap();
            let teams = page["teams"].as_array().unwrap();
            assert!(teams.len() <= 3);
            seen.extend(teams.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        created.sort();
        seen.sort();
        assert_eq!(seen, created);
        let bad = app.admin(Method::GET, "/teams?cursor=not-a-cursor").send().await.unwrap();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let zero = app.admin(Method::GET, "/teams?limit=0").send().await.unwrap();
        assert_eq!(zero.status(), StatusCode::BAD_REQUEST);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_limit_above_the_maximum_is_capped() {
    let app = spawn_app(Db::Sqlite).await;
    for n in 0..(teams::PAGE_LIMIT_MAX + 1) {
        app.admin(Method::POST, "/teams")
            .json(&json!({ "name": format!("t{n}") }))
            .send()
            .await
            .unwrap();
    }
    let page: Value = app
        .admin(Method::GET, "/teams?limit=100000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        page["teams"].as_array().unwrap().len(),
        teams::PAGE_LIMIT_MAX as usize
    );
    assert!(page["next_cursor"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn every_admin_endpoint_answers_401_with_www_authenticate_without_the_token() {
    let app = spawn_app(Db::Sqlite).await;
    let team = app.create_team("Core").await;
    let other = uuid::Uuid::now_v7();
    let endpoints = [
        (Method::POST, "/teams".to_owned()),
        (Method::GET, "/teams".to_owned()),
        (Method::GET, format!("/teams/{team}")),
        (Method::PATCH, format!("/teams/{team}")),
        (Method::DELETE, format!("/teams/{team}")),
        (Method::POST, format!("/teams/{team}/invitations")),
        (Method::GET, format!("/teams/{team}/invitations")),
        (Method::DELETE, format!("/teams/{team}/invitations/{other}")),
        (
            Method::POST,
            format!("/teams/{team}/invitations/{other}/resend"),
        ),
        (Method::GET, format!("/teams/{team}/members")),
        (Method::DELETE, format!("/teams/{team}/members/{other}")),
    ];
    for (method, path) in endpoints {
        for token in [None, Some("wrong-token"), Some("")] {
            let mut request = app
                .public(method.clone(), &path)
                .json(&json!({"name": "x"}));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {token:?}"
            );
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
        }
    }
    // The team is untouched.
    let read = app
        .admin(Method::GET, &format!("/teams/{team}"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn malformed_oversized_and_non_json_bodies_are_problems() {
    let app = spawn_app(Db::Sqlite).await;
    let malformed = app
        .admin(Method::POST, "/teams")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        malformed.headers()["content-type"],
        "application/problem+json"
    );

    let not_json = app
        .admin(Method::POST, "/teams")
        .header("content-type", "text/plain")
        .body("name")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        not_json.headers()["content-type"],
        "application/problem+json"
    );

    let huge = json!({ "name": "x", "description": "y".repeat(200 * 1024) });
    let too_large = app
        .admin(Method::POST, "/teams")
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        too_large.headers()["content-type"],
        "application/problem+json"
    );

    let empty_name = app
        .admin(Method::POST, "/teams")
        .json(&json!({"name": "   "}))
        .send()
        .await
        .unwrap();
    assert_eq!(empty_name.status(), StatusCode::BAD_REQUEST);

    let bad_id = app
        .admin(Method::GET, "/teams/not-a-uuid")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_id.status(), StatusCode::NOT_FOUND);
    assert_eq!(bad_id.headers()["content-type"], "application/problem+json");

    let response = app.admin(Method::GET, "/teams").send().await.unwrap();
    assert!(response.headers().contains_key("x-request-id"));
    app.stop().await;
}
