//! What the gateway adds to a request: the same requests sent straight to an instant mock
//! upstream and through a real `switchyard serve` process in front of it, measured in one run.
//!
//! Run with `cargo bench --bench overhead` (`BENCH_QUICK=1` for a short run). The gateway is the
//! crate's own binary, built by `cargo bench` with the bench profile (release settings), found
//! through `CARGO_BIN_EXE_switchyard`. Everything talks over 127.0.0.1 only, and every loop is
//! bounded in count or time.
//!
//! The 2 cores of a typical machine are shared by the load generator, the mock upstream and the
//! gateway, so absolute throughput is a floor; the ratio and the added latency are the figures
//! to compare between commits.

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::Path;
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
    let gateway = Gateway::start(work.path(), upstream)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(measure(&plan, upstream, &gateway));
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

impl AwakeCpus {
    fn start() -> BenchResult<AwakeCpus> {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        let spinners = (0..cores)
            .map(|_| {
                Command::new("nice")
                    .args(["-n", "19", "sh", "-c", "while :; do :; done"])
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
// The gateway: the real binary, as a separate process, with auth and usage recording on.

struct Gateway {
    child: Child,
    address: SocketAddr,
    key: String,
}

impl Gateway {
    fn start(work: &Path, upstream: SocketAddr) -> BenchResult<Gateway> {
        let binary = env!("CARGO_BIN_EXE_switchyard");
        let port = StdTcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = work.join("switchyard.toml");
        let db = work.join("switchyard.db");
        fs::write(
            &config,
            format!(
                r#"[server]
listen = "127.0.0.1:{port}"

[database]
url = "sqlite://{db}"

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
                db = db.display()
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
        let key = run(&["keys", "create", "--name", "bench"])?
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
            key,
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
    Direct,
    Gateway,
}

struct Endpoints<'a> {
    upstream: SocketAddr,
    gateway: &'a Gateway,
}

impl Endpoints<'_> {
    async fn client(&self, target: Target) -> BenchResult<Client> {
        match target {
            Target::Direct => Client::connect(self.upstream, Some("sk-test")).await,
            Target::Gateway => Client::connect(self.gateway.address, Some(&self.gateway.key)).await,
        }
    }
}

/// Samples of both targets, taken alternately: noise from whatever else the machine is doing
/// then lands on both alike instead of on whichever ran second.
struct Paired<T> {
    direct: Vec<T>,
    gateway: Vec<T>,
}

impl<T> Paired<T> {
    fn with_capacity(n: usize) -> Paired<T> {
        Paired {
            direct: Vec::with_capacity(n),
            gateway: Vec::with_capacity(n),
        }
    }
}

async fn sequential(endpoints: &Endpoints<'_>, plan: &Plan) -> BenchResult<Paired<Duration>> {
    let body = chat_body(false);
    let mut direct = endpoints.client(Target::Direct).await?;
    let mut gateway = endpoints.client(Target::Gateway).await?;
    for _ in 0..plan.warmup {
        expect_ok(direct.chat(&body).await?)?;
        expect_ok(gateway.chat(&body).await?)?;
    }
    let mut samples = Paired::with_capacity(plan.sequential);
    for _ in 0..plan.sequential {
        for (client, into) in [
            (&mut direct, &mut samples.direct),
            (&mut gateway, &mut samples.gateway),
        ] {
            let started = Instant::now();
            let status = client.chat(&body).await?;
            into.push(started.elapsed());
            expect_ok(status)?;
        }
    }
    Ok(samples)
}

/// Per stream: the time to its first content byte, and to its end.
async fn streaming(
    endpoints: &Endpoints<'_>,
    plan: &Plan,
) -> BenchResult<Paired<(Duration, Duration)>> {
    let body = chat_body(true);
    let mut direct = endpoints.client(Target::Direct).await?;
    let mut gateway = endpoints.client(Target::Gateway).await?;
    for _ in 0..plan.warmup {
        direct.stream(&body).await?;
        gateway.stream(&body).await?;
    }
    let mut samples = Paired::with_capacity(plan.streams);
    for _ in 0..plan.streams {
        samples.direct.push(direct.stream(&body).await?);
        samples.gateway.push(gateway.stream(&body).await?);
    }
    Ok(samples)
}

#[derive(Default)]
struct Load {
    ok: u64,
    failed: u64,
    elapsed: Duration,
}

impl Load {
    fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn add(&mut self, slice: Load) {
        self.ok += slice.ok;
        self.failed += slice.failed;
        self.elapsed += slice.elapsed;
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

/// Every client sends requests back to back until the deadline; returns the count and the
/// clients still usable for the next slice.
async fn load_slice(
    clients: Vec<Client>,
    body: &Bytes,
    duration: Duration,
) -> BenchResult<(Load, Vec<Client>)> {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
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
    let load = Load {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    };
    Ok((load, usable))
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
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces; utime and
    // stime are fields 14 and 15 of the whole line, so 12th and 13th after the `)`.
    let after = &stat[stat.rfind(')').ok_or("bad /proc stat")? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks =
        |i: usize| -> BenchResult<u64> { Ok(fields.get(i).ok_or("short /proc stat")?.parse()?) };
    Ok(Usage {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        cpu_ticks: ticks(11)? + ticks(12)?,
    })
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

fn percentiles(samples: &mut [Duration]) -> Percentiles {
    samples.sort_unstable();
    let at = |p: f64| {
        let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len().max(1));
        samples.get(rank - 1).copied().unwrap_or_default()
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

fn added_row(
    w: &mut String,
    label: &str,
    via: &Percentiles,
    direct: &Percentiles,
) -> std::fmt::Result {
    let added =
        |g: Duration, d: Duration| format!("{:+.1} µs", (g.as_secs_f64() - d.as_secs_f64()) * 1e6);
    let (p50, p90, p99) = (
        added(via.p50, direct.p50),
        added(via.p90, direct.p90),
        added(via.p99, direct.p99),
    );
    writeln!(w, "    {label:<16} {p50:>12} {p90:>12} {p99:>12}")
}

async fn measure(plan: &Plan, upstream: SocketAddr, gateway: &Gateway) -> BenchResult<String> {
    let endpoints = Endpoints { upstream, gateway };
    let pid = gateway.pid();
    let idle = process_usage(pid)?;

    // (a) latency at concurrency 1.
    let mut latency = sequential(&endpoints, plan).await?;
    let direct = percentiles(&mut latency.direct);
    let via = percentiles(&mut latency.gateway);

    // (c) streaming, before the load so the load's after-effects (a queue of usage rows still
    // being written) do not land in it.
    let streams = streaming(&endpoints, plan).await?;
    let split = |samples: &[(Duration, Duration)]| -> (Vec<Duration>, Vec<Duration>) {
        samples.iter().copied().unzip()
    };
    let (mut direct_first, mut direct_total) = split(&streams.direct);
    let (mut via_first, mut via_total) = split(&streams.gateway);
    let (direct_first, via_first) = (percentiles(&mut direct_first), percentiles(&mut via_first));
    let (direct_total, via_total) = (percentiles(&mut direct_total), percentiles(&mut via_total));

    // (b) throughput at concurrency 64 in alternating slices, with (d) the gateway's CPU time
    // summed over its own slices only.
    let body = chat_body(false);
    let mut direct_pool = connect_all(&endpoints, Target::Direct, plan, &body).await?;
    let mut gateway_pool = connect_all(&endpoints, Target::Gateway, plan, &body).await?;
    let slice = plan.load_duration / plan.load_slices;
    let (mut direct_load, mut via_load) = (Load::default(), Load::default());
    let mut gateway_ticks = 0;
    let sampler = RssSampler::start(pid);
    for _ in 0..plan.load_slices {
        let (done, pool) = load_slice(direct_pool, &body, slice).await?;
        direct_load.add(done);
        direct_pool = pool;
        let before = process_usage(pid)?;
        let (done, pool) = load_slice(gateway_pool, &body, slice).await?;
        let after = process_usage(pid)?;
        via_load.add(done);
        gateway_pool = pool;
        gateway_ticks += after.cpu_ticks.saturating_sub(before.cpu_ticks);
    }
    let peak_rss = sampler.finish();
    drop((direct_pool, gateway_pool));
    let after = process_usage(pid)?;
    let cpu_seconds = gateway_ticks as f64 / clock_ticks_per_second() as f64;
    let served = (via_load.ok + via_load.failed).max(1);
    let cpu_per_request = cpu_seconds / served as f64;
    if direct_load.failed > 0 || via_load.failed > 0 {
        eprintln!(
            "warning: failed requests under load: direct {}, gateway {}",
            direct_load.failed, via_load.failed
        );
    }

    let cores = thread::available_parallelism().map_or(0, |n| n.get());
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
        "bearer auth, routing, usage recorded to SQLite). \"added\" = gateway - direct. Direct and"
    )?;
    writeln!(
        w,
        "gateway requests alternate; loopback only; {cores} cores shared by load generator,"
    )?;
    writeln!(
        w,
        "upstream and gateway, so compare figures between runs on the same machine."
    )?;
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
    percentile_row(w, "direct", &direct)?;
    percentile_row(w, "gateway", &via)?;
    added_row(w, "added", &via, &direct)?;
    writeln!(w)?;
    let (c, secs, slices) = (
        plan.concurrency,
        plan.load_duration.as_secs_f64(),
        plan.load_slices,
    );
    writeln!(
        w,
        "(b) throughput, concurrency {c}, {secs:.0} s each in {slices} alternating slices"
    )?;
    for (label, load) in [("direct", &direct_load), ("gateway", &via_load)] {
        let rate = load.per_second();
        writeln!(
            w,
            "    {label:<16} {rate:>10.0} req/s  ({} ok, {} failed)",
            load.ok, load.failed
        )?;
    }
    let ratio = via_load.per_second() / direct_load.per_second().max(f64::MIN_POSITIVE);
    writeln!(
        w,
        "    {:<16} {ratio:>10.3}        (gateway / direct)",
        "ratio"
    )?;
    writeln!(w)?;
    let streams = plan.streams;
    writeln!(
        w,
        "(c) streaming, concurrency 1, {streams} streams each: time to first content byte, to [DONE]"
    )?;
    header(w)?;
    percentile_row(w, "direct first", &direct_first)?;
    percentile_row(w, "gateway first", &via_first)?;
    added_row(w, "added first", &via_first, &direct_first)?;
    percentile_row(w, "direct [DONE]", &direct_total)?;
    percentile_row(w, "gateway [DONE]", &via_total)?;
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
    writeln!(
        w,
        "    CPU per request, user+sys, c={c}     {:>8.1} µs   ({cpu_seconds:.2} CPU-s, {served} requests)",
        cpu_per_request * 1e6
    )?;
    Ok(out)
}
