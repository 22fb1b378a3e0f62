//! What the gateway adds to a request: the same requests sent straight to an instant mock
//! upstream and through a real `switchyard serve` process in front of it, measured in one run;
//! and what a key's spending limit adds on top (a credit hold in the database per request).
//!
//! Run with `cargo bench --bench overhead` (`BENCH_QUICK=1` for a short run; `BENCH_DATABASE_URL`
//! for Postgres, see [`Database`]). The gateway is the crate's own binary, built by `cargo bench`
//! with the bench profile (release settings), found through `CARGO_BIN_EXE_switchyard`.
//! Everything talks over 127.0.0.1 only, and every loop is bounded in count or time.
//!
//! The 2 cores of a typical machine are shared by the load generator, the mock upstream, the
//! gateway and Postgres, so absolute throughput is a floor; the ratios and the added latency are
//! the figures to compare between commits.

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sqlx::{Connection, Executor, PgConnection, Row};
use tokio::net::{TcpListener, TcpStream};

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const MODEL: &str = "bench/fast";

/// A small, realistic chat.completion, as a fast upstream returns it.
const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"fast-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}"#;

/// Role chunk, five content chunks, finish chunk, usage chunk, `[DONE]`: OpenAI's shape.
const STREAM: &str = concat!(
    r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"fast-model","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"fast-model","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"fast-model","choices":[{"index":0,"delta":{"content":"!"},"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"fast-model","choices":[{"index":0,"delta":{"content":" How"},"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"fast-model","choices":[{"index":0,"delta":{"content":" can"},"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"fast-model","choices":[{"index":0,"delta":{"content":" I help?"},"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"fast-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"fast-model","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":6,"total_tokens":18}}"#,
    "\n\n",
    "data: [DONE]\n\n",
);

/// Bounded counts and durations; `BENCH_QUICK=1` shrinks them for a smoke run.
struct Plan {
    /// `BENCH_AWAKE=1`: see [`AwakeCpus`].
    awake: bool,
    warmup: usize,
    sequential: usize,
    streams: usize,
    concurrency: usize,
    /// Per target, split into `load_slices` alternating slices.
    load_duration: Duration,
    load_slices: u32,
}

impl Plan {
    fn from_env() -> Plan {
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0");
        let awake = set("BENCH_AWAKE");
        if set("BENCH_QUICK") {
            Plan {
                awake,
                warmup: 50,
                sequential: 300,
                streams: 100,
                concurrency: 64,
                load_duration: Duration::from_secs(1),
                load_slices: 2,
            }
        } else {
            Plan {
                awake,
                warmup: 300,
                sequential: 2_000,
                streams: 500,
                concurrency: 64,
                load_duration: Duration::from_secs(5),
                load_slices: 5,
            }
        }
    }
}

fn main() -> BenchResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // nextest asks every test binary for its tests; this one has none.
    if args.iter().any(|a| a == "--list") {
        return Ok(());
    }
    // `cargo test --all-targets` runs benches without `--bench`: a benchmark is not a test.
    if !args.iter().any(|a| a == "--bench") {
        println!("overhead: skipped (run it with `cargo bench --bench overhead`)");
        return Ok(());
    }
    let plan = Plan::from_env();
    let _awake = plan.awake.then(AwakeCpus::start).transpose()?;

    let upstream = spawn_upstream()?;
    let work = tempfile::tempdir()?;
    let database = Database::create(work.path())?;
    let gateway = Gateway::start(work.path(), upstream, &database)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(measure(&plan, upstream, &gateway, &database));
    drop(gateway);
    match report {
        Ok(report) => {
            println!("{report}");
            Ok(())
        }
        Err(error) => {
            // The temporary directory goes with this process: show the gateway's log now.
            let log = fs::read_to_string(work.path().join("serve.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("gateway log (last {} lines):", tail.len());
            for line in tail.iter().rev() {
                eprintln!("  {line}");
            }
            Err(error)
        }
    }
}

/// One lowest-priority busy loop per core, for the whole run. On a virtual machine an idle vCPU
/// halts, and waking it costs tens of microseconds; a request through the gateway wakes two more
/// threads than a direct one, so at concurrency 1 that wake-up cost, not the gateway's work,
/// dominates the added latency. Spinners at `nice 19` keep every vCPU from halting (what a guest's
/// `haltpoll` idle governor does) and give way to any real work, so both targets are measured
/// without halt exits. The default run leaves them off.
struct AwakeCpus(Vec<Child>);

/// A spinner in a session of its own, its autogroup at nice 19. With autogroups (the Linux
/// default) nice weighs tasks only against others in their session, so a database server started
/// elsewhere (Postgres) would compete with the spinners as an equal. They still slow Postgres's
/// commits (the README says by how much). Setting an autogroup's nice is rate-limited for
/// non-root users: a few tries.
const SPIN: &str = "for _ in 1 2 3 4 5; do { echo 19 > /proc/self/autogroup; } 2>/dev/null && break; \
     sleep 0.2; done; while :; do :; done";

impl AwakeCpus {
    fn start() -> BenchResult<AwakeCpus> {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        let spinners = (0..cores)
            .map(|_| {
                Command::new("setsid")
                    .args(["nice", "-n", "19", "sh", "-c", SPIN])
                    .stdin(Stdio::null())
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        Ok(AwakeCpus(spinners))
    }
}

impl Drop for AwakeCpus {
    fn drop(&mut self) {
        for spinner in &mut self.0 {
            // Already gone is fine: nothing else to stop.
            let _ = spinner.kill();
            let _ = spinner.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The mock upstream: instant answers, on its own thread and runtime.

fn spawn_upstream() -> BenchResult<SocketAddr> {
    let listener = StdTcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Detached: it lives as long as the benchmark process.
    thread::Builder::new()
        .name("mock-upstream".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = TcpListener::from_std(listener) else {
                    return;
                };
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service_fn(answer))
                            .await;
                    });
                }
            });
        })?;
    Ok(address)
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let is_chat = request.method() == http::Method::POST
        && request.uri().path().ends_with("/chat/completions");
    let body = request.into_body().collect().await?.to_bytes();
    let response = if !is_chat {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new()))
    } else if memchr::memmem::find(&body, br#""stream":true"#).is_some() {
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(Full::new(Bytes::from_static(STREAM.as_bytes())))
    } else {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(COMPLETION.as_bytes())))
    };
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

// ---------------------------------------------------------------------------------------------
// The database: a SQLite file, or a Postgres database made for the run.

/// Where the gateway keeps its data. `BENCH_DATABASE_URL` (`postgres://…`) names a Postgres
/// server and a database to connect to for `CREATE DATABASE`; the run then gets a database of
/// its own beside that one, dropped when the run ends. Without it, a SQLite file in the run's
/// temporary directory.
enum Database {
    Sqlite(PathBuf),
    Postgres {
        admin: String,
        name: String,
        url: String,
        /// For the report: version, `host:port` (not the user and password the URL may carry),
        /// and `synchronous_commit`, which decides whether each hold waits for a disk flush.
        server: String,
    },
}

impl Database {
    fn create(work: &Path) -> BenchResult<Database> {
        let Some(admin) = std::env::var("BENCH_DATABASE_URL")
            .ok()
            .filter(|url| !url.is_empty())
        else {
            return Ok(Database::Sqlite(work.join("switchyard.db")));
        };
        let (scheme, rest) = admin
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "postgres" | "postgresql"))
            .ok_or("BENCH_DATABASE_URL must be a postgres:// URL")?;
        let (server, query) = rest.split_once('?').map_or((rest, ""), |(s, q)| (s, q));
        let authority = server.split('/').next().unwrap_or(server);
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let settings = on_admin_connection(
            &admin,
            "SELECT split_part(current_setting('server_version'), ' ', 1) \
             || ', synchronous_commit ' || current_setting('synchronous_commit')",
        )?
        .unwrap_or_default();
        let server = format!("Postgres at {host} ({settings})");
        let name = format!("sy_bench_{:016x}", rand::random::<u64>());
        let separator = if query.is_empty() { "" } else { "?" };
        let url = format!("{scheme}://{authority}/{name}{separator}{query}");
        on_admin_connection(&admin, &format!("CREATE DATABASE {name}"))?;
        Ok(Database::Postgres {
            admin,
            name,
            url,
            server,
        })
    }

    fn url(&self) -> String {
        match self {
            Database::Sqlite(path) => format!("sqlite://{}", path.display()),
            Database::Postgres { url, .. } => url.clone(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "SQLite",
            Database::Postgres { .. } => "Postgres",
        }
    }

    fn describe(&self) -> String {
        match self {
            Database::Sqlite(_) => "SQLite, a file in the run's temporary directory".into(),
            Database::Postgres { name, server, .. } => {
                format!("{server}, database {name} made for this run")
            }
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Database::Postgres { admin, name, .. } = self {
            // FORCE: a gateway that had to be killed may have left connections open.
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            if let Err(error) = on_admin_connection(admin, &drop) {
                eprintln!("warning: database {name} was not dropped: {error}");
            }
        }
    }
}

/// Runs one statement on the database `admin` names; returns the first column of its first row,
/// if it has one.
fn on_admin_connection(admin: &str, statement: &str) -> BenchResult<Option<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut connection = PgConnection::connect(admin)
            .await
            .map_err(|error| format!("cannot connect to BENCH_DATABASE_URL: {error}"))?;
        let row = connection.fetch_optional(statement).await?;
        connection.close().await?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    })
}

// ---------------------------------------------------------------------------------------------
// The gateway: the real binary, as a separate process, with auth and usage recording on.

struct Gateway {
    child: Child,
    address: SocketAddr,
    unlimited_key: String,
    limited_key: String,
}

impl Gateway {
    fn start(work: &Path, upstream: SocketAddr, database: &Database) -> BenchResult<Gateway> {
        let binary = env!("CARGO_BIN_EXE_switchyard");
        let port = StdTcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = work.join("switchyard.toml");
        fs::write(
            &config,
            format!(
                r#"[server]
listen = "127.0.0.1:{port}"

[database]
url = "{db}"

[[providers]]
id = "up"
kind = "openai-compatible"
base_url = "http://{upstream}/v1"
api_key = "sk-test"

[[models]]
id = "{MODEL}"
  [[models.endpoints]]
  provider = "up"
  upstream = "fast-model"
  prompt = "1"
  completion = "2"
  max_output = 16384
"#,
                db = database.url()
            ),
        )?;
        let run = |args: &[&str]| -> BenchResult<String> {
            let output = Command::new(binary)
                .args(args)
                .arg("--config")
                .arg(&config)
                .output()?;
            if !output.status.success() {
                return Err(format!(
                    "switchyard {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr)
                )
                .into());
            }
            Ok(String::from_utf8(output.stdout)?)
        };
        run(&["migrate"])?;
        let unlimited_key = run(&["keys", "create", "--name", "bench"])?
            .trim()
            .to_owned();
        // Far more than a run can spend: no request is refused, every one takes a hold.
        let limited_key = run(&[
            "keys",
            "create",
            "--name",
            "bench-limited",
            "--limit",
            "100000",
        ])?
        .trim()
        .to_owned();

        // Its logs go to a file: a pipe nobody reads would fill and stall the gateway.
        let log = work.join("serve.log");
        let sink = fs::File::create(&log)?;
        let child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(sink.try_clone()?)
            .stderr(sink)
            .spawn()?;
        let gateway = Gateway {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            unlimited_key,
            limited_key,
        };
        gateway.wait_ready()?;
        Ok(gateway)
    }

    fn wait_ready(&self) -> BenchResult<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ready = runtime.block_on(async {
                let mut client = Client::connect(self.address, None).await.ok()?;
                client.get("/health/ready").await.ok()
            });
            if ready == Some(StatusCode::OK) {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err("the gateway was not ready within 30s".into())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // SIGTERM first so it drains its usage writer as in production; kill if it hangs.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The load generator: one keep-alive HTTP/1.1 connection per concurrent caller.

struct Client {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    bearer: Option<String>,
}

impl Client {
    async fn connect(address: SocketAddr, key: Option<&str>) -> BenchResult<Client> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Client {
            sender,
            host: address.to_string(),
            bearer: key.map(|k| format!("Bearer {k}")),
        })
    }

    fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Bytes,
    ) -> BenchResult<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(bearer) = &self.bearer {
            builder = builder.header(header::AUTHORIZATION, bearer);
        }
        Ok(builder.body(Full::new(body))?)
    }

    async fn get(&mut self, path: &str) -> BenchResult<StatusCode> {
        let request = self.request(http::Method::GET, path, Bytes::new())?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        Ok(status)
    }

    /// One whole request: sent, answered, body read to the end.
    async fn chat(&mut self, body: &Bytes) -> BenchResult<StatusCode> {
        let request = self.request(http::Method::POST, "/v1/chat/completions", body.clone())?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        Ok(status)
    }

    /// One stream: the time until the first non-empty content delta arrived, and in all.
    async fn stream(&mut self, body: &Bytes) -> BenchResult<(Duration, Duration)> {
        let started = Instant::now();
        let request = self.request(http::Method::POST, "/v1/chat/completions", body.clone())?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        if response.status() != StatusCode::OK {
            return Err(format!("stream answered {}", response.status()).into());
        }
        let mut body = response.into_body();
        let mut seen = Vec::with_capacity(4096);
        let mut first_content = None;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                seen.extend_from_slice(&data);
                if first_content.is_none() && has_content(&seen) {
                    first_content = Some(started.elapsed());
                }
            }
        }
        let total = started.elapsed();
        let first = first_content.ok_or("the stream carried no content")?;
        if memchr::memmem::find(&seen, b"data: [DONE]").is_none() {
            return Err("the stream did not end with [DONE]".into());
        }
        Ok((first, total))
    }
}

/// True once the bytes hold a non-empty `content` delta (the role chunk's `""` does not count).
fn has_content(bytes: &[u8]) -> bool {
    let needle = br#""content":""#;
    memchr::memmem::find_iter(bytes, needle).any(|at| {
        bytes
            .get(at + needle.len())
            .is_some_and(|&next| next != b'"')
    })
}

fn chat_body(stream: bool) -> Bytes {
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
        "stream": stream,
    });
    Bytes::from(body.to_string())
}

// ---------------------------------------------------------------------------------------------
// The measurements.

#[derive(Clone, Copy)]
enum Target {
    /// The mock upstream alone: no auth, no credit check, no usage recording.
    Direct,
    /// The gateway with a key without a spending limit: no database on the request path.
    Unlimited,
    /// The gateway with a key with a limit: a credit hold in the database before each request.
    Limited,
}

/// What the gateway adds to a request with a key without a limit.
const GATEWAY: Pair<Target> = Pair {
    base: Target::Direct,
    candidate: Target::Unlimited,
};

/// What a key's limit adds: the credit hold before the request, and its settlement.
const CREDIT_CHECK: Pair<Target> = Pair {
    base: Target::Unlimited,
    candidate: Target::Limited,
};

struct Endpoints<'a> {
    upstream: SocketAddr,
    gateway: &'a Gateway,
}

impl Endpoints<'_> {
    async fn client(&self, target: Target) -> BenchResult<Client> {
        let gateway = self.gateway;
        match target {
            Target::Direct => Client::connect(self.upstream, Some("sk-test")).await,
            Target::Unlimited => {
                Client::connect(gateway.address, Some(&gateway.unlimited_key)).await
            }
            Target::Limited => Client::connect(gateway.address, Some(&gateway.limited_key)).await,
        }
    }

    /// Returns once the gateway has written every usage row (and settled every hold) recorded so
    /// far, so one measurement's backlog does not land on the next: a lookup of a generation
    /// that does not exist flushes the writer's queue before it answers 404.
    async fn settle(&self) -> BenchResult<()> {
        let mut client = self.client(Target::Unlimited).await?;
        match client.get("/v1/generation?id=gen-bench-none").await? {
            StatusCode::NOT_FOUND => Ok(()),
            status => Err(format!("the usage flush answered {status}").into()),
        }
    }
}

/// One figure for each of two targets: `base` is what the other is compared with ("added",
/// ratios).
struct Pair<T> {
    base: T,
    candidate: T,
}

impl<T> Pair<T> {
    fn map<U>(&self, f: impl Fn(&T) -> U) -> Pair<U> {
        Pair {
            base: f(&self.base),
            candidate: f(&self.candidate),
        }
    }
}

/// Requests to the two targets alternate: noise from whatever else the machine is doing then
/// lands on both alike instead of on whichever ran second.
async fn sequential(
    endpoints: &Endpoints<'_>,
    plan: &Plan,
    targets: Pair<Target>,
) -> BenchResult<Pair<Vec<Duration>>> {
    let body = chat_body(false);
    let mut base = endpoints.client(targets.base).await?;
    let mut candidate = endpoints.client(targets.candidate).await?;
    for _ in 0..plan.warmup {
        expect_ok(base.chat(&body).await?)?;
        expect_ok(candidate.chat(&body).await?)?;
    }
    endpoints.settle().await?;
    let mut samples = Pair {
        base: Vec::with_capacity(plan.sequential),
        candidate: Vec::with_capacity(plan.sequential),
    };
    for _ in 0..plan.sequential {
        for (client, into) in [
            (&mut base, &mut samples.base),
            (&mut candidate, &mut samples.candidate),
        ] {
            let started = Instant::now();
            let status = client.chat(&body).await?;
            into.push(started.elapsed());
            expect_ok(status)?;
        }
    }
    Ok(samples)
}

/// Per stream: the time to its first content byte, and to its end. Alternating, as
/// [`sequential`].
async fn streaming(
    endpoints: &Endpoints<'_>,
    plan: &Plan,
    targets: Pair<Target>,
) -> BenchResult<Pair<Vec<(Duration, Duration)>>> {
    let body = chat_body(true);
    let mut base = endpoints.client(targets.base).await?;
    let mut candidate = endpoints.client(targets.candidate).await?;
    for _ in 0..plan.warmup {
        base.stream(&body).await?;
        candidate.stream(&body).await?;
    }
    endpoints.settle().await?;
    let mut samples = Pair {
        base: Vec::with_capacity(plan.streams),
        candidate: Vec::with_capacity(plan.streams),
    };
    for _ in 0..plan.streams {
        samples.base.push(base.stream(&body).await?);
        samples.candidate.push(candidate.stream(&body).await?);
    }
    Ok(samples)
}

#[derive(Default)]
struct Load {
    ok: u64,
    failed: u64,
    elapsed: Duration,
    /// The gateway's CPU time (user + system) over the same time.
    gateway_ticks: u64,
    /// The part of it spent by the SQLite writer and checkpoint threads.
    sqlite_ticks: u64,
}

impl Load {
    fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn add(&mut self, slice: Load) {
        self.ok += slice.ok;
        self.failed += slice.failed;
        self.elapsed += slice.elapsed;
        self.gateway_ticks += slice.gateway_ticks;
        self.sqlite_ticks += slice.sqlite_ticks;
    }

    fn cpu_per_request(&self, ticks_per_second: u64) -> Duration {
        self.per_request(self.gateway_ticks, ticks_per_second)
    }

    fn per_request(&self, ticks: u64, ticks_per_second: u64) -> Duration {
        let seconds = ticks as f64 / ticks_per_second.max(1) as f64;
        Duration::from_secs_f64(seconds / (self.ok + self.failed).max(1) as f64)
    }
}

/// `plan.concurrency` keep-alive connections, each warmed so no timed slice holds a handshake.
async fn connect_all(
    endpoints: &Endpoints<'_>,
    target: Target,
    plan: &Plan,
    body: &Bytes,
) -> BenchResult<Vec<Client>> {
    let mut clients = Vec::with_capacity(plan.concurrency);
    for _ in 0..plan.concurrency {
        let mut client = endpoints.client(target).await?;
        expect_ok(client.chat(body).await?)?;
        clients.push(client);
    }
    Ok(clients)
}

/// Both targets at `plan.concurrency`, in alternating slices. A slice lasts until the gateway
/// has also written its requests' usage rows and settled their holds, and counts the gateway's
/// CPU time meanwhile: the writer works behind the requests, and its backlog must count for the
/// target that made it, not land on the next slice.
async fn throughput(
    endpoints: &Endpoints<'_>,
    plan: &Plan,
    targets: Pair<Target>,
) -> BenchResult<Pair<Load>> {
    let pid = endpoints.gateway.pid();
    let body = chat_body(false);
    let mut base_pool = connect_all(endpoints, targets.base, plan, &body).await?;
    let mut candidate_pool = connect_all(endpoints, targets.candidate, plan, &body).await?;
    endpoints.settle().await?;
    let slice = plan.load_duration / plan.load_slices;
    let mut loads = Pair {
        base: Load::default(),
        candidate: Load::default(),
    };
    for _ in 0..plan.load_slices {
        for (pool, load) in [
            (&mut base_pool, &mut loads.base),
            (&mut candidate_pool, &mut loads.candidate),
        ] {
            let before = process_usage(pid)?;
            let sqlite_before = sqlite_ticks(pid)?;
            let started = Instant::now();
            let (counts, usable) = load_slice(std::mem::take(pool), &body, slice).await?;
            endpoints.settle().await?;
            let elapsed = started.elapsed();
            let after = process_usage(pid)?;
            let sqlite_after = sqlite_ticks(pid)?;
            load.add(Load {
                elapsed,
                gateway_ticks: after.cpu_ticks.saturating_sub(before.cpu_ticks),
                sqlite_ticks: sqlite_after.saturating_sub(sqlite_before),
                ..counts
            });
            *pool = usable;
        }
    }
    Ok(loads)
}

/// Every client sends requests back to back until the deadline; returns the counts and the
/// clients still usable for the next slice.
async fn load_slice(
    clients: Vec<Client>,
    body: &Bytes,
    duration: Duration,
) -> BenchResult<(Load, Vec<Client>)> {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut workers = Vec::with_capacity(clients.len());
    for mut client in clients {
        let (body, ok, failed) = (body.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match client.chat(&body).await {
                    Ok(StatusCode::OK) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => failed.fetch_add(1, Ordering::Relaxed),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                };
            }
            Some(client)
        }));
    }
    let mut usable = Vec::with_capacity(workers.len());
    for worker in workers {
        usable.extend(worker.await?);
    }
    let counts = Load {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        ..Load::default()
    };
    Ok((counts, usable))
}

fn expect_ok(status: StatusCode) -> BenchResult<()> {
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(format!("a benchmark request answered {status}").into())
    }
}

/// What `/proc` says about the gateway process.
struct Usage {
    rss_kib: u64,
    hwm_kib: u64,
    cpu_ticks: u64,
}

fn process_usage(pid: u32) -> BenchResult<Usage> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> BenchResult<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or(format!("no {name} in /proc"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .ok_or("bad /proc line")?
            .parse()?)
    };
    let (_, cpu_ticks) = cpu_ticks(&fs::read_to_string(format!("/proc/{pid}/stat"))?)?;
    Ok(Usage {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        cpu_ticks,
    })
}

/// The CPU ticks of the gateway's threads whose name starts `switchyard-sqlite` (the kernel keeps
/// 15 characters): the SQLite write connection and the checkpoint thread.
fn sqlite_ticks(pid: u32) -> BenchResult<u64> {
    let mut sum = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that ended between the listing and the read has nothing left to count.
        let Ok(stat) = fs::read_to_string(task?.path().join("stat")) else {
            continue;
        };
        let (name, ticks) = cpu_ticks(&stat)?;
        if name.starts_with("switchyard-sqli") {
            sum += ticks;
        }
    }
    Ok(sum)
}

/// The command name and user + system ticks of a `/proc/.../stat` line. The name is in
/// parentheses and may hold spaces; utime and stime are fields 14 and 15 of the whole line, so
/// 12th and 13th after the `)`.
fn cpu_ticks(stat: &str) -> BenchResult<(&str, u64)> {
    let open = stat.find('(').ok_or("bad /proc stat")?;
    let close = stat.rfind(')').ok_or("bad /proc stat")?;
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let ticks =
        |i: usize| -> BenchResult<u64> { Ok(fields.get(i).ok_or("short /proc stat")?.parse()?) };
    Ok((&stat[open + 1..close], ticks(11)? + ticks(12)?))
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Samples the gateway's resident set while a load runs, keeping the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(usage) = process_usage(pid) {
                    p.fetch_max(usage.rss_kib, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

struct Percentiles {
    p50: Duration,
    p90: Duration,
    p99: Duration,
}

fn percentiles(samples: &[Duration]) -> Percentiles {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let at = |p: f64| {
        let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
        sorted.get(rank - 1).copied().unwrap_or_default()
    };
    Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
    }
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn header(w: &mut String) -> std::fmt::Result {
    writeln!(
        w,
        "    {:<16} {:>12} {:>12} {:>12}",
        "", "p50", "p90", "p99"
    )
}

fn percentile_row(w: &mut String, label: &str, p: &Percentiles) -> std::fmt::Result {
    let (p50, p90, p99) = (micros(p.p50), micros(p.p90), micros(p.p99));
    writeln!(w, "    {label:<16} {p50:>12} {p90:>12} {p99:>12}")
}

/// The two targets' percentiles, then what the candidate adds to the base; `labels` name the
/// three rows.
fn latency_rows(w: &mut String, labels: [&str; 3], p: &Pair<Percentiles>) -> std::fmt::Result {
    let added =
        |c: Duration, b: Duration| format!("{:+.1} µs", (c.as_secs_f64() - b.as_secs_f64()) * 1e6);
    let (p50, p90, p99) = (
        added(p.candidate.p50, p.base.p50),
        added(p.candidate.p90, p.base.p90),
        added(p.candidate.p99, p.base.p99),
    );
    percentile_row(w, labels[0], &p.base)?;
    percentile_row(w, labels[1], &p.candidate)?;
    writeln!(w, "    {:<16} {p50:>12} {p90:>12} {p99:>12}", labels[2])
}

/// Each target's rate and counts, then candidate / base; with `cpu`, the gateway's CPU time per
/// request on each row.
fn throughput_rows(
    w: &mut String,
    labels: [&str; 2],
    loads: &Pair<Load>,
    cpu: Option<u64>,
) -> std::fmt::Result {
    for (label, load) in [(labels[0], &loads.base), (labels[1], &loads.candidate)] {
        let rate = load.per_second();
        let counts = format!("({} ok, {} failed)", load.ok, load.failed);
        match cpu {
            Some(ticks_per_second) => {
                let per_request = micros(load.cpu_per_request(ticks_per_second));
                let sqlite = match load.sqlite_ticks {
                    0 => String::new(),
                    ticks => format!(
                        " (SQLite threads {})",
                        micros(load.per_request(ticks, ticks_per_second))
                    ),
                };
                writeln!(
                    w,
                    "    {label:<16} {rate:>10.0} req/s  {counts:<24} gateway CPU {per_request:>9}/request{sqlite}"
                )?;
            }
            None => writeln!(w, "    {label:<16} {rate:>10.0} req/s  {counts}")?,
        }
    }
    let ratio = loads.candidate.per_second() / loads.base.per_second().max(f64::MIN_POSITIVE);
    let ratio_of = format!("({} / {})", labels[1], labels[0]);
    writeln!(w, "    {:<16} {ratio:>10.3}        {ratio_of}", "ratio")
}

async fn measure(
    plan: &Plan,
    upstream: SocketAddr,
    gateway: &Gateway,
    database: &Database,
) -> BenchResult<String> {
    let endpoints = Endpoints { upstream, gateway };
    let pid = gateway.pid();
    let idle = process_usage(pid)?;

    // Latency and streams first, so no load's after-effects land in them.
    let latency = sequential(&endpoints, plan, GATEWAY)
        .await?
        .map(|s| percentiles(s));
    let credit_latency = sequential(&endpoints, plan, CREDIT_CHECK)
        .await?
        .map(|s| percentiles(s));
    let streams = streaming(&endpoints, plan, GATEWAY).await?;
    let first =
        streams.map(|s| percentiles(&s.iter().map(|&(first, _)| first).collect::<Vec<_>>()));
    let total =
        streams.map(|s| percentiles(&s.iter().map(|&(_, total)| total).collect::<Vec<_>>()));

    let sampler = RssSampler::start(pid);
    let load = throughput(&endpoints, plan, GATEWAY).await?;
    let credit_load = throughput(&endpoints, plan, CREDIT_CHECK).await?;
    let peak_rss = sampler.finish();
    let after = process_usage(pid)?;
    let failed = [
        &load.base,
        &load.candidate,
        &credit_load.base,
        &credit_load.candidate,
    ]
    .map(|l| l.failed);
    if failed.iter().any(|&n| n > 0) {
        eprintln!(
            "warning: failed requests under load: direct {}, gateway {}, unlimited key {}, \
             limited key {}",
            failed[0], failed[1], failed[2], failed[3]
        );
    }
    let ticks_per_second = clock_ticks_per_second();

    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let db = database.kind();
    let mut out = String::new();
    let w = &mut out;
    writeln!(w)?;
    writeln!(
        w,
        "Switchyard overhead: the same requests sent straight to an instant in-process mock"
    )?;
    writeln!(
        w,
        "upstream (\"direct\") and through the release-built gateway in front of it (\"gateway\":"
    )?;
    writeln!(
        w,
        "bearer auth, routing, usage recorded to {db}). \"added\" = gateway - direct. Direct and"
    )?;
    writeln!(
        w,
        "gateway requests alternate; loopback only; {cores} cores shared by load generator,"
    )?;
    writeln!(
        w,
        "upstream, gateway and database, so compare figures between runs on the same machine."
    )?;
    writeln!(w, "Database: {}.", database.describe())?;
    if plan.awake {
        writeln!(
            w,
            "BENCH_AWAKE: every core kept from idling by a nice-19 busy loop (no vCPU halt exits)."
        )?;
    }
    writeln!(w)?;
    let (n, warm) = (plan.sequential, plan.warmup);
    writeln!(
        w,
        "(a) latency, concurrency 1, {n} non-streaming requests each (after {warm} warm-up)"
    )?;
    header(w)?;
    latency_rows(w, ["direct", "gateway", "added"], &latency)?;
    writeln!(w)?;
    let (c, secs, slices) = (
        plan.concurrency,
        plan.load_duration.as_secs_f64(),
        plan.load_slices,
    );
    let load_title = format!(
        "throughput, concurrency {c}, {secs:.0} s each in {slices} alternating slices, each \
         until its usage is written"
    );
    writeln!(w, "(b) {load_title}")?;
    throughput_rows(w, ["direct", "gateway"], &load, None)?;
    writeln!(w)?;
    let streams = plan.streams;
    writeln!(
        w,
        "(c) streaming, concurrency 1, {streams} streams each: time to first content byte, to [DONE]"
    )?;
    header(w)?;
    latency_rows(w, ["direct first", "gateway first", "added first"], &first)?;
    percentile_row(w, "direct [DONE]", &total.base)?;
    percentile_row(w, "gateway [DONE]", &total.candidate)?;
    writeln!(w)?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    writeln!(w, "(d) gateway process, from /proc")?;
    writeln!(
        w,
        "    RSS idle, before any request        {:>8.1} MiB",
        mib(idle.rss_kib)
    )?;
    // VmHWM and the samples can each miss the other's peak (the kernel syncs RSS counters
    // lazily; samples are 50 ms apart), so the larger is reported.
    let peak = mib(peak_rss.max(after.hwm_kib));
    writeln!(w, "    RSS peak, whole run with the load   {peak:>8.1} MiB")?;
    let gateway_cpu = &load.candidate;
    let served = gateway_cpu.ok + gateway_cpu.failed;
    let cpu_seconds = gateway_cpu.gateway_ticks as f64 / ticks_per_second.max(1) as f64;
    writeln!(
        w,
        "    CPU per request, user+sys, c={c}     {:>8} ({cpu_seconds:.2} CPU-s, {served} requests)",
        micros(gateway_cpu.cpu_per_request(ticks_per_second))
    )?;
    if db == "SQLite" {
        writeln!(
            w,
            "      of which SQLite writer threads     {:>8}",
            micros(gateway_cpu.per_request(gateway_cpu.sqlite_ticks, ticks_per_second))
        )?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "(e) credit checks: a key with a spending limit (a credit hold in {db} before each request,"
    )?;
    writeln!(
        w,
        "    settled with its usage batch) against a key without (no database on the request path)"
    )?;
    writeln!(
        w,
        "    latency, concurrency 1, {n} requests each (after {warm} warm-up)"
    )?;
    header(w)?;
    latency_rows(
        w,
        ["unlimited key", "limited key", "added by hold"],
        &credit_latency,
    )?;
    writeln!(w, "    {load_title}")?;
    throughput_rows(
        w,
        ["unlimited key", "limited key"],
        &credit_load,
        Some(ticks_per_second),
    )?;
    writeln!(
        w,
        "    (the gateway process's CPU: with Postgres, the server's own work is not in it)"
    )?;
    Ok(out)
}
