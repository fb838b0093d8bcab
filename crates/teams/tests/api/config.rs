//! Start-up checks: every missing or invalid setting named, all at once; secrets redacted.

use std::net::SocketAddr;

use teams::{Secret, TeamsArgs};
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
async fn production_without_settings_names_every_required_variable_and_app_url_is_optional() {
    let dir = tempfile::tempdir().unwrap();
    let problems = TeamsArgs::default()
        .check(&production(dir.path()))
        .await
        .unwrap_err();
    let text = report(&problems);
    for setting in [
        "FRONTEND_URL (--frontend-url)",
        "DATABASE_URL (--database-url)",
        "SMTP_URL (--smtp-url)",
        "MAIL_FROM (--mail-from)",
        "ADMIN_TOKEN (--admin-token)",
    ] {
        assert!(text.contains(setting), "{setting} not named in:\n{text}");
    }
    assert!(!text.contains("APP_URL"), "APP_URL is optional:\n{text}");
    assert_eq!(problems.len(), 5, "{text}");
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
        database_url: Some(Secret::new("postgres://nobody@127.0.0.1:1/none")),
        smtp_url: Some(Secret::new("mailto:someone")),
        mail_from: Some("not a mailbox".into()),
        admin_token: Some(Secret::new("short-secret-value")),
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
        database_url: Some(Secret::new(format!(
            "sqlite://{}/prod.sqlite3",
            dir.path().display()
        ))),
        smtp_url: Some(Secret::new(
            "smtp://user:smtp-password@127.0.0.1:2525?tls=required",
        )),
        mail_from: Some("Logbook <noreply@example.com>".into()),
        admin_token: Some(Secret::new(secret_token)),
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
    assert_eq!(settings.app_url.as_deref(), Some("http://127.0.0.1:4321"));
    let token = settings.admin_token.expose().to_owned();
    assert!(token.len() >= 32);
    let service = teams::TeamsService::start(settings).await.unwrap();
    let banner = service.dev_banner().expect("a banner in development mode");
    assert!(banner.contains(&token));
    assert!(banner.contains(&dir.path().join("mail").display().to_string()));
    assert!(dir.path().join("teams.sqlite3").exists());
    service.shutdown().await;
}

fn complete_production() -> TeamsArgs {
    TeamsArgs {
        frontend_url: Some("https://app.example.com".into()),
        smtp_url: Some(Secret::new("smtps://user:password@smtp.example.com")),
        mail_from: Some("Logbook <noreply@example.com>".into()),
        admin_token: Some(Secret::new("production-admin-token-0123456789abcdef")),
        ..TeamsArgs::default()
    }
}

async fn problems_of(args: TeamsArgs, dir: &std::path::Path) -> Vec<web::ConfigProblem> {
    let args = TeamsArgs {
        database_url: Some(Secret::new(format!(
            "sqlite://{}/prod.sqlite3",
            dir.display()
        ))),
        ..args
    };
    match args.check(&production(dir)).await {
        Ok(_) => Vec::new(),
        Err(problems) => problems,
    }
}

#[tokio::test]
async fn production_refuses_http_urls_credentials_without_tls_and_degenerate_numbers() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        problems_of(complete_production(), dir.path())
            .await
            .is_empty()
    );
    let cases: Vec<(TeamsArgs, &str, &str)> = vec![
        (
            TeamsArgs {
                frontend_url: Some("http://app.example.com".into()),
                ..complete_production()
            },
            "FRONTEND_URL (--frontend-url)",
            "not https",
        ),
        (
            TeamsArgs {
                app_url: Some("http://api.example.com".into()),
                ..complete_production()
            },
            "APP_URL (--app-url)",
            "not https",
        ),
        (
            TeamsArgs {
                smtp_url: Some(Secret::new("smtp://user:s3cret-pw@smtp.example.com:587")),
                ..complete_production()
            },
            "SMTP_URL (--smtp-url)",
            "clear text",
        ),
        (
            TeamsArgs {
                smtp_url: Some(Secret::new(
                    "smtp://user:s3cret-pw@smtp.example.com:587?tls=opportunistic",
                )),
                ..complete_production()
            },
            "SMTP_URL (--smtp-url)",
            "clear text",
        ),
        (
            TeamsArgs {
                mail_retry_max_ms: 0,
                ..complete_production()
            },
            "MAIL_RETRY_MAX_MS (--mail-retry-max-ms)",
            "out of range",
        ),
        (
            TeamsArgs {
                mail_retry_initial_ms: 5_000,
                mail_retry_max_ms: 1_000,
                ..complete_production()
            },
            "MAIL_RETRY_INITIAL_MS (--mail-retry-initial-ms)",
            "out of range",
        ),
        (
            TeamsArgs {
                mail_max_attempts: 0,
                ..complete_production()
            },
            "MAIL_MAX_ATTEMPTS (--mail-max-attempts)",
            "out of range",
        ),
        (
            TeamsArgs {
                mail_concurrency: 0,
                ..complete_production()
            },
            "MAIL_CONCURRENCY (--mail-concurrency)",
            "out of range",
        ),
        (
            TeamsArgs {
                trusted_proxies: Some("10.0.0.0/8, 10.0.0.0/33".into()),
                ..complete_production()
            },
            "TRUSTED_PROXIES (--trusted-proxies)",
            "prefix length",
        ),
    ];
    for (args, setting, what) in cases {
        let problems = problems_of(args, dir.path()).await;
        assert_eq!(problems.len(), 1, "{setting}: {}", report(&problems));
        assert_eq!(problems[0].setting, setting);
        assert!(
            problems[0].message.contains(what),
            "{setting}: {}",
            problems[0].message
        );
        assert!(
            !problems[0].message.contains("s3cret-pw"),
            "a secret leaked"
        );
    }
}

#[tokio::test]
async fn the_urls_used_are_the_urls_checked_as_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let args = TeamsArgs {
        database_url: Some(Secret::new(format!(
            "sqlite://{}/prod.sqlite3",
            dir.path().display()
        ))),
        frontend_url: Some("  HTTPS://App.Example.COM:443/a/../invites/ ".into()),
        app_url: Some("https://API.example.com/".into()),
        ..complete_production()
    };
    let settings = args.check(&production(dir.path())).await.expect("valid");
    assert_eq!(settings.frontend_url, "https://app.example.com/invites");
    assert_eq!(settings.frontend_origin, "https://app.example.com");
    assert_eq!(settings.app_url.as_deref(), Some("https://api.example.com"));
}
