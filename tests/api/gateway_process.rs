//! A real `switchyard serve` process on a random port, for what only separate processes can
//! show: replicas sharing one database, and a gateway killed with SIGKILL.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a process gets to start listening or to drain after SIGTERM.
const PATIENCE: Duration = Duration::from_secs(20);

pub struct GatewayProcess {
    child: Child,
    pub base: String,
    log: PathBuf,
    /// Holds the config and log files for the life of the process.
    _directory: tempfile::TempDir,
}

impl GatewayProcess {
    /// Starts `switchyard serve` on `database` with `tables` appended to a config that listens on
    /// port 0 and logs JSON, and waits until it listens.
    pub async fn start(database: &str, tables: &str) -> GatewayProcess {
        let directory = tempfile::tempdir().unwrap();
        let config = directory.path().join("switchyard.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[server]
listen = "127.0.0.1:0"
log_format = "json"

[database]
url = "{database}"
flush_interval = "20ms"

{tables}
"#
            ),
        )
        .unwrap();
        let log = directory.path().join("switchyard.log");
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("SWITCHYARD_CONFIG")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("switchyard starts");
        let mut process = GatewayProcess {
            child,
            base: String::new(),
            log,
            _directory: directory,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(address) = process.listening_address() {
                process.base = format!("http://{address}");
                return process;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("switchyard exited with {status}: {}", process.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "switchyard never listened: {}",
                process.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn listening_address(&self) -> Option<String> {
        self.log_text().lines().find_map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).ok()?;
            let fields = &event["fields"];
            (fields["message"] == "switchyard listening")
                .then(|| fields["address"].as_str().map(str::to_owned))?
        })
    }

    /// The most resident memory the process has had (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib / 1024
    }

    /// SIGKILL: no draining, no flushing, nothing.
    pub fn kill_hard(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits until the process has drained and exited.
    pub async fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "switchyard did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
