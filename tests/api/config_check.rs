//! `switchyard check` through the real binary: exit status and what stderr names.

use std::path::Path;
use std::process::{Command, Output};

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run switchyard: {error}"))
}

fn check(config: &Path) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .env_remove("SWITCHYARD_CONFIG")
        .env_remove("SWITCHYARD_CHECK_TEST_UNSET"))
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap_or_else(|error| panic!("cannot write {name}: {error}"));
    path
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|error| panic!("cannot make a temp dir: {error}"))
}

#[test]
fn check_fails_on_a_broken_file_naming_its_line_and_key() {
    let dir = temp_dir();
    let path = write(
        &dir,
        "broken.toml",
        "# comment\n[server]\nlisen = \"0.0.0.0:8080\"\n",
    );
    let output = check(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "check must fail: {stderr}");
    assert!(
        stderr.contains("broken.toml:3:1:"),
        "names file and line: {stderr}"
    );
    assert!(
        stderr.contains("unknown field `lisen`"),
        "names the key: {stderr}"
    );
}

#[test]
fn check_fails_on_a_semantic_error_naming_its_line_and_key() {
    let dir = temp_dir();
    let text = "[[providers]]\nid = \"mock\"\nkind = \"mock\"\n\n[[providers]]\nid = \"groq\"\nkind = \"openai-compatible\"\n";
    let path = write(&dir, "semantic.toml", text);
    let output = check(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "check must fail: {stderr}");
    assert!(
        stderr.contains("semantic.toml:5:"),
        "names file and line: {stderr}"
    );
    assert!(
        stderr.contains("providers[1] (id \"groq\"): base_url is required"),
        "{stderr}"
    );
}

#[test]
fn check_fails_on_a_missing_environment_variable_naming_it() {
    let dir = temp_dir();
    let text = "[server]\nadmin_token = \"${SWITCHYARD_CHECK_TEST_UNSET}\"\n";
    let path = write(&dir, "env.toml", text);
    let output = check(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "check must fail: {stderr}");
    assert!(stderr.contains("env.toml:2:16: admin_token:"), "{stderr}");
    assert!(
        stderr.contains("SWITCHYARD_CHECK_TEST_UNSET is not set"),
        "{stderr}"
    );
}

#[test]
fn check_never_prints_a_substituted_secret() {
    let dir = temp_dir();
    let text = "[[providers]]\nid = \"mock\"\nkind = \"mock\"\n[[models]]\nid = \"a/b\"\ncontext_length = \"${SWITCHYARD_CHECK_TEST_SECRET}\"\n";
    let path = write(&dir, "secret.toml", text);
    let output = run(Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(&path)
        .env("SWITCHYARD_CHECK_TEST_SECRET", "sk-never-print-me"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "check must fail: {stderr}");
    assert!(stderr.contains("models[0].context_length"), "{stderr}");
    assert!(!stderr.contains("sk-never-print-me"), "{stderr}");
}

#[test]
fn check_accepts_the_example_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/switchyard.example.toml");
    let output = check(&example);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the example must validate: {stderr}"
    );
}

#[test]
fn check_warns_about_a_remote_database_reached_without_tls() {
    let dir = temp_dir();
    for (url, warned) in [
        ("postgres://app@db.internal/switchyard", true),
        ("postgres://app@db.internal/switchyard?sslmode=prefer", true),
        (
            "postgres://app@db.internal/switchyard?sslmode=verify-full",
            false,
        ),
        ("postgres://app@127.0.0.1/switchyard", false),
        ("sqlite://switchyard.db", false),
    ] {
        let path = write(&dir, "db.toml", &format!("[database]\nurl = \"{url}\"\n"));
        let output = check(&path);
        assert!(output.status.success(), "{url}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.contains("without sslmode=require"),
            warned,
            "{url}: {stderr}"
        );
    }
}

#[test]
fn tls_cert_and_key_go_together() {
    let dir = temp_dir();
    let path = write(&dir, "tls.toml", "[server]\ntls_cert = \"/etc/cert.pem\"\n");
    let output = check(&path);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tls_key"), "{stderr}");
}
