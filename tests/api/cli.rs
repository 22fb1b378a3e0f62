//! The `switchyard` commands through the real binary: keys, migrate, models, and the embedded
//! default that runs with no config file at all.

use std::path::Path;
use std::process::{Command, Output};

fn switchyard(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(dir)
        .env_remove("SWITCHYARD_CONFIG")
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("switchyard runs");
    assert!(
        output.status.success(),
        "switchyard {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn keys_are_created_listed_and_disabled_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let created = switchyard(
        dir.path(),
        &[
            "keys",
            "create",
            "--name",
            "ci",
            "--limit",
            "12.5",
            "--limit-reset",
            "monthly",
        ],
    );
    let key = stdout(&created).trim().to_owned();
    assert!(key.starts_with("sk-sy-") && key.len() > 40, "{key}");
    assert!(
        dir.path().join("switchyard.db").exists(),
        "the embedded default uses ./switchyard.db"
    );

    let listed = stdout(&switchyard(dir.path(), &["keys", "list"]));
    let line = listed
        .lines()
        .find(|line| line.contains("\tci\t"))
        .expect("the key is listed");
    assert!(
        !line.contains(&key),
        "the secret is never shown again: {line}"
    );
    let hash = line.split('\t').next().unwrap().to_owned();
    assert_eq!(hash.len(), 64, "lines start with the key's hash: {line}");
    assert!(line.contains("12.5") && line.contains("enabled"), "{line}");

    switchyard(dir.path(), &["keys", "disable", &hash]);
    let listed = stdout(&switchyard(dir.path(), &["keys", "list"]));
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with(&hash) && line.contains("disabled")),
        "{listed}"
    );
}

#[test]
fn migrate_and_models_work_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    switchyard(dir.path(), &["migrate"]);
    let models = stdout(&switchyard(dir.path(), &["models"]));
    let echo = models
        .lines()
        .find(|line| line.starts_with("switchyard/echo"))
        .expect("the mock model");
    assert!(echo.contains("mock") && echo.contains("echo"), "{echo}");
    assert!(
        !models.contains("openai/gpt-4o"),
        "providers without keys serve nothing: {models}"
    );
}

#[test]
fn the_embedded_default_adds_providers_whose_key_is_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("models")
        .current_dir(dir.path())
        .env_remove("SWITCHYARD_CONFIG")
        .env("OPENAI_API_KEY", "sk-from-env")
        .output()
        .unwrap();
    let models = stdout(&output);
    assert!(
        models
            .lines()
            .any(|line| line.starts_with("openai/gpt-4o ") && line.contains("openai")),
        "{models}"
    );
    assert!(!models.contains("sk-from-env"));
}

#[test]
fn keys_are_updated_enabled_and_deleted_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let created = switchyard(
        dir.path(),
        &[
            "keys",
            "create",
            "--name",
            "ops",
            "--expires-at",
            "2099-01-01T00:00:00Z",
        ],
    );
    assert!(stdout(&created).starts_with("sk-sy-"));
    let listed = stdout(&switchyard(dir.path(), &["keys", "list"]));
    let line = listed
        .lines()
        .find(|line| line.contains("\tops\t"))
        .unwrap();
    let hash = line.split('\t').next().unwrap().to_owned();
    assert!(line.ends_with("\tenabled\tunlimited"), "{line}");

    let updated = stdout(&switchyard(
        dir.path(),
        &[
            "keys",
            "update",
            &hash,
            "--name",
            "ops-renamed",
            "--limit",
            "3.25",
            "--limit-reset",
            "weekly",
        ],
    ));
    assert!(
        updated.starts_with(&hash) && updated.contains("\tops-renamed\t"),
        "{updated}"
    );
    assert!(updated.trim_end().ends_with("\tenabled\t3.25"), "{updated}");
    let updated = stdout(&switchyard(
        dir.path(),
        &[
            "keys",
            "update",
            &hash,
            "--limit",
            "none",
            "--limit-reset",
            "none",
        ],
    ));
    assert!(updated.trim_end().ends_with("\tunlimited"), "{updated}");

    switchyard(dir.path(), &["keys", "disable", &hash]);
    let enabled = stdout(&switchyard(dir.path(), &["keys", "enable", &hash]));
    assert_eq!(enabled.trim(), format!("enabled {hash}"));
    let listed = stdout(&switchyard(dir.path(), &["keys", "list"]));
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with(&hash) && line.contains("\tenabled\t")),
        "{listed}"
    );

    switchyard(dir.path(), &["keys", "delete", &hash]);
    let listed = stdout(&switchyard(dir.path(), &["keys", "list"]));
    assert!(!listed.contains(&hash), "{listed}");
    let again = failing(dir.path(), &["keys", "delete", &hash]);
    assert!(again.contains("no key with hash"), "{again}");
}

#[test]
fn the_command_line_refuses_a_bad_limit_reset_or_expiry_and_an_empty_name() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["keys", "create", "--name", "x", "--limit", "-1"][..],
        &["keys", "create", "--name", "x", "--limit", "1e3"],
        &["keys", "create", "--name", "x", "--limit-reset", "yearly"],
        &["keys", "create", "--name", "x", "--expires-at", "tomorrow"],
        &["keys", "create", "--name", " "],
        &["keys", "update", "0000", "--limit-reset", "hourly"],
    ] {
        failing(dir.path(), args);
    }
    let long = "n".repeat(129);
    let error = failing(dir.path(), &["keys", "create", "--name", &long]);
    assert!(error.contains("at most 128 characters"), "{error}");
    let error = failing(dir.path(), &["keys", "create", "--name", "a\nforged line"]);
    assert!(error.contains("control characters"), "{error}");
}

#[tokio::test]
async fn keys_list_prints_a_stored_name_s_control_characters_escaped() {
    let dir = tempfile::tempdir().unwrap();
    switchyard(dir.path(), &["keys", "create", "--name", "plain"]);
    // A name from before control characters were refused, written straight into the table.
    let url = format!("sqlite://{}", dir.path().join("switchyard.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE api_keys SET name = 'a' || char(10) || 'b' || char(27) || '[2J'")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let listed = stdout(&switchyard(dir.path(), &["keys", "list"]));
    assert_eq!(listed.lines().count(), 1, "{listed:?}");
    assert!(listed.contains("\ta\\nb\\u{1b}[2J\t"), "{listed:?}");
}

/// Runs a command that must fail; returns its standard error.
fn failing(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(dir)
        .env_remove("SWITCHYARD_CONFIG")
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("switchyard runs");
    assert!(!output.status.success(), "switchyard {args:?} succeeded");
    String::from_utf8(output.stderr).unwrap()
}
