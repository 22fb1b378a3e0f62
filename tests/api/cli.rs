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
