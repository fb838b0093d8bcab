//! The OpenAPI document covers every route, status and problem body.

use serde_json::Value;

#[test]
fn the_openapi_document_is_3_1_and_lists_every_route_with_its_statuses() {
    let document: Value = serde_json::to_value(teams::openapi()).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = &document["paths"];
    let expected: &[(&str, &str, &[&str])] = &[
        (
            "/teams",
            "post",
            &["201", "400", "401", "409", "413", "415"],
        ),
        ("/teams", "get", &["200", "400", "401"]),
        ("/teams/{team_id}", "get", &["200", "401", "404"]),
        (
            "/teams/{team_id}",
            "patch",
            &["200", "400", "401", "404", "409"],
        ),
        ("/teams/{team_id}", "delete", &["204", "401", "404"]),
        (
            "/teams/{team_id}/invitations",
            "post",
            &["207", "400", "401", "404"],
        ),
        (
            "/teams/{team_id}/invitations",
            "get",
            &["200", "401", "404"],
        ),
        (
            "/teams/{team_id}/invitations/{invitation_id}",
            "delete",
            &["204", "404", "409"],
        ),
        (
            "/teams/{team_id}/invitations/{invitation_id}/resend",
            "post",
            &["202", "404", "409", "429"],
        ),
        ("/teams/{team_id}/members", "get", &["200", "401", "404"]),
        (
            "/teams/{team_id}/members/{member_id}",
            "delete",
            &["204", "401", "404"],
        ),
        ("/invitations/accept", "post", &["200", "404", "410", "429"]),
        (
            "/invitations/preview",
            "post",
            &["200", "404", "410", "429"],
        ),
        ("/invite", "get", &["200"]),
        (
            "/teams/{team_id}/invitations/{invitation_id}",
            "get",
            &["200", "401", "404"],
        ),
        (
            "/teams/{team_id}/invitations/{invitation_id}",
            "patch",
            &["200", "400", "404", "409"],
        ),
        (
            "/teams/{team_id}/members/{member_id}",
            "patch",
            &["200", "400", "404"],
        ),
        (
            "/teams/{team_id}/audit",
            "get",
            &["200", "400", "401", "404"],
        ),
    ];
    for (path, method, statuses) in expected {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} missing");
        for status in *statuses {
            assert!(
                operation["responses"][status].is_object(),
                "{method} {path} lacks {status}"
            );
        }
    }
    let conflict =
        &paths["/teams"]["post"]["responses"]["409"]["content"]["application/problem+json"];
    assert_eq!(conflict["schema"]["$ref"], "#/components/schemas/Problem");
    assert!(document["components"]["securitySchemes"]["admin_token"].is_object());
    // The second wave's contract: roles, statuses, the batch's own expiry, Idempotency-Key.
    let schemas = &document["components"]["schemas"];
    assert_eq!(
        schemas["Role"]["enum"],
        serde_json::json!(["member", "admin", "owner"])
    );
    assert!(
        schemas["DeliveryStatus"]["enum"]
            .as_array()
            .unwrap()
            .contains(&"failed".into())
    );
    assert!(schemas["InviteRequest"]["properties"]["expires_in_hours"].is_object());
    let parameters = paths["/teams"]["post"]["parameters"].as_array().unwrap();
    assert!(
        parameters
            .iter()
            .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header")
    );
    let filters = paths["/teams/{team_id}/invitations"]["get"]["parameters"]
        .as_array()
        .unwrap();
    for name in ["status", "email", "limit", "cursor"] {
        assert!(filters.iter().any(|p| p["name"] == name), "{name} filter");
    }
}
