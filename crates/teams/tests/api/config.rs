//! Start-up checks: every missing or invalid setting named, all at once; secrets redacted.

use std::net::SocketAddr;

use teams::TeamsArgs;
use web::ServiceContext;

fn production(data_dir: &std::path::Path) -> ServiceContext {
    ServiceContext {
        production: true,
        data_dir: data_dir.to_path_buf(),
        local_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
    }
}

fn report(problems: &[web::ConfigProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn production_without_settings_names_every_required_variable() {
    let dir = tempfile::tempdir().unwrap();
    let problems = TeamsArgs::default()
        .check(&production(dir.path()))
        .await
        .unwrap_err();
    let text = report(&problems);
    for setting in [
        "APP_URL (--app-url)",
        "FRONTEND_URL (--frontend-url)",
        "DATABASE_URL (--database-url)",
        "SMTP_URL (--smtp-url)",
        "MAIL_FROM (--mail-from)",
        "ADMIN_TOKEN (--admin-token)",
    ] {
        assert!(text.contains(setting), "{setting} not named in:\n{text}");
    }
    assert_eq!(problems.len(), 6, "{text}");
    assert!(
        problems
            .iter()
            .all(|p| p.message.contains("missing; set it"))
    );
}

#[tokio::test]
async fn invalid_values_are_each_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let args = TeamsArgs {
        app_url: Some("ftp://api.example.com".into()),
        frontend_url: Some("/relative".into()),
        database_url: Some("postgres://nobody@127.0.0.1:1/none".into()),
        smtp_url: Some("mailto:someone".into()),
        mail_from: Some("not a mailbox".into()),
        admin_token: Some("short-secret-value".into()),
        invite_ttl_hours: 0,
        ..TeamsArgs::default()
    };
    let problems = args.check(&production(dir.path())).await.unwrap_err();
    let text = report(&problems);
    let expectations = [
        ("APP_URL (--app-url)", "not an absolute http(s) URL"),
        (
            "FRONTEND_URL (--frontend-url)",
            "not an absolute http(s) URL",
        ),
        (
            "DATABASE_URL (--database-url)",
            "cannot connect to the database",
        ),
        ("SMTP_URL (--smtp-url)", "unsupported scheme"),
        ("MAIL_FROM (--mail-from)", "is not a mailbox"),
        ("ADMIN_TOKEN (--admin-token)", "too short"),
        ("INVITE_TTL_HOURS (--invite-ttl-hours)", "out of range"),
    ];
    for (setting, what) in expectations {
        assert!(
            problems
                .iter()
                .any(|p| p.setting == setting && p.message.contains(what)),
            "expected {setting}: {what} in:\n{text}"
        );
    }
    assert!(
        !text.contains("short-secret-value"),
        "the token leaked into the report"
    );
}

#[tokio::test]
async fn a_complete_production_configuration_passes_and_debug_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secret_token = "production-admin-token-0123456789abcdef";
    let args = TeamsArgs {
        app_url: Some("https://api.example.com".into()),
        frontend_url: Some("https://app.example.com".into()),
        database_url: Some(format!("sqlite://{}/prod.sqlite3", dir.path().display())),
        smtp_url: Some("smtp://user:smtp-password@127.0.0.1:2525".into()),
        mail_from: Some("Logbook <noreply@example.com>".into()),
        admin_token: Some(secret_token.into()),
        ..TeamsArgs::default()
    };
    assert!(!format!("{args:?}").contains(secret_token));
    assert!(!format!("{args:?}").contains("smtp-password"));
    let settings = args
        .check(&production(dir.path()))
        .await
        .expect("valid settings");
    let debug = format!("{settings:?}");
    assert!(!debug.contains(secret_token), "{debug}");
    assert!(!debug.contains("smtp-password"), "{debug}");
    assert!(
        dir.path().join("prod.sqlite3").exists(),
        "the SQLite file is created"
    );
}

#[tokio::test]
async fn development_mode_needs_nothing_and_its_banner_prints_the_token_and_mail_directory() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ServiceContext {
        production: false,
        data_dir: dir.path().to_path_buf(),
        local_addr: SocketAddr::from(([127, 0, 0, 1], 4321)),
    };
    let settings = TeamsArgs::default()
        .check(&ctx)
        .await
        .expect("development defaults");
    assert_eq!(settings.frontend_url, "http://127.0.0.1:4321");
    assert_eq!(settings.app_url, "http://127.0.0.1:4321");
    let token = settings.admin_token.expose().to_owned();
    assert!(token.len() >= 32);
    let service = teams::TeamsService::start(settings).await.unwrap();
    let banner = service.dev_banner().expect("a banner in development mode");
    assert!(banner.contains(&token));
    assert!(banner.contains(&dir.path().join("mail").display().to_string()));
    assert!(dir.path().join("teams.sqlite3").exists());
    service.shutdown().await;
}
