//! A bounded HTTP/1.1 load generator that runs inside a network namespace.
//!
//! `concurrency` worker threads each enter the namespace (sockets keep the namespace they were
//! created in) and loop until `duration` has passed **or** `max_requests` attempts have been
//! made, whichever comes first; every attempt, failed or not, uses up one of `max_requests`.
//! An operation in flight at the deadline is finished (each socket operation is bounded by
//! [`OP_TIMEOUT`]), so a run ends at most about `duration + 2 × OP_TIMEOUT` after it started.
//! Failures (refused, reset, timed out, a non-2xx status, a malformed answer) are counted by
//! kind and never panic; after one, the worker pauses [`ERROR_PAUSE`] so a refused port does
//! not turn into a busy loop.
//!
//! - [`new_connections`]: connect → `GET / HTTP/1.1` with `Connection: close` → read the whole
//!   response → close, per request (what `wrk -H 'Connection: close'` did for the baselines in
//!   shared/notes/bench-baselines.md). Every request is a new TCP connection, so its first
//!   packet crosses the Service translation.
//! - [`Mode::Paced`]: new connections as above, offered at a fixed total rate (each worker
//!   its share, evenly spaced, never in a burst to catch up), well below what any layout
//!   can do, so every layout does the same work and the run's CPU time
//!   ([`Report::cpu_seconds`], the lab's, see [`crate::cpu`]) divided by the connections is
//!   what a connection costs, not where the ceiling is.
//! - [`keepalive_requests`]: one persistent connection per worker, requests back to back;
//!   reconnects (counted in `connections`) when the server closes or answers
//!   `Connection: close` (e.g. the lab's echo servers, which answer HTTP/1.0 and close).
//!
//! [`Spec`] describes a run; [`run_spec`] runs one here, and the `svc-bench-load` binary runs
//! one as a process of its own (started in a pod's namespace and cgroup, as a kubelet would
//! start a pod's process: [`run_process`]), printing the [`Report`] as JSON.
//!
//! Latencies go into HDR histograms (1 µs to 60 s, 3 significant digits): *connect* is the
//! time from the start of `connect()` to the established connection (SYN → SYN-ACK, through the
//! Service translation), *request* the time from writing the request to having read the whole
//! response.
//!
//! Client-side TIME_WAIT: every client socket gets `SO_LINGER` {on, 0}, so closing it sends a
//! RST and leaves no TIME_WAIT entry behind. At ~10k new connections/s from one address the
//! 28k ephemeral ports of the default `ip_local_port_range` would otherwise run out within
//! seconds (wrk avoided it only because the server closes first under `Connection: close`).
//! With the RST the server side skips TIME_WAIT too. No explicit source-port binding is needed.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Bound on every single socket operation (connect, one write, one read).
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause of a worker after a failed attempt.
pub const ERROR_PAUSE: Duration = Duration::from_millis(1);
/// Longest response head (status line + headers) accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Longest response body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// Histogram range: 1 µs to 60 s, 3 significant digits.
const HIST_MAX_US: u64 = 60_000_000;

/// The request of [`new_connections`].
pub const REQUEST_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
/// The request of [`keepalive_requests`] (HTTP/1.1 keeps the connection by default).
pub const REQUEST_KEEPALIVE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

/// Which kind of load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// A new TCP connection per request.
    NewConnections,
    /// Persistent connections.
    KeepAlive,
    /// A new TCP connection per request, offered at `per_second` in total.
    Paced { per_second: u32 },
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Requests answered with a 2xx status and read completely.
    pub requests: u64,
    /// Failed attempts (all kinds; see `errors_by_kind`).
    pub errors: u64,
    /// TCP connections established.
    pub connections: u64,
    /// Wall time of the run, from the start of the load to the last worker's end.
    #[serde(with = "secs_f64")]
    pub duration: Duration,
    /// `requests / duration`.
    pub rate_per_s: f64,
    pub connect_p50_us: u64,
    pub connect_p99_us: u64,
    pub connect_p999_us: u64,
    pub request_p50_us: u64,
    pub request_p99_us: u64,
    pub request_p999_us: u64,
    /// Failures by kind, e.g. `"connect: connection refused": 3`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// CPU seconds the lab spent during the run ([`crate::cpu::lab_cpu`]), if the run was
    /// given a cgroup to measure ([`Spec::cpu_cgroup`]); absent in results of earlier
    /// versions.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
}

impl Report {
    /// CPU µs per request answered, if the run measured its CPU time.
    pub fn cpu_us_per_request(&self) -> Option<f64> {
        let cpu = self.cpu_seconds?;
        (self.requests > 0).then(|| cpu * 1e6 / self.requests as f64)
    }
}

/// One load run: what [`run_spec`] runs, and what the `svc-bench-load` process takes as
/// JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// The network namespace the workers enter (a process started in it enters it again,
    /// harmlessly).
    pub ns: String,
    pub target: SocketAddrV4,
    pub mode: Mode,
    /// Worker threads (at least 1).
    pub concurrency: usize,
    #[serde(with = "secs_f64")]
    pub duration: Duration,
    /// Cap on attempts.
    pub max_requests: u64,
    /// The cgroup whose CPU time (with the softirq threads') the run measures, from the
    /// start gate to the last worker's end.
    #[serde(default)]
    pub cpu_cgroup: Option<PathBuf>,
}

mod secs_f64 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// Counters and latency histograms of one worker, merged into one [`Report`].
#[derive(Debug, Clone)]
pub struct Stats {
    connect_us: Histogram<u64>,
    request_us: Histogram<u64>,
    requests: u64,
    errors: u64,
    connections: u64,
    errors_by_kind: BTreeMap<String, u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            connect_us: new_histogram(),
            request_us: new_histogram(),
            requests: 0,
            errors: 0,
            connections: 0,
            errors_by_kind: BTreeMap::new(),
        }
    }

    /// An established connection that took `d` to connect.
    pub fn record_connect(&mut self, d: Duration) {
        self.connections += 1;
        self.connect_us.saturating_record(micros(d));
    }

    /// A successful request that took `d` (request written → response read).
    pub fn record_request(&mut self, d: Duration) {
        self.requests += 1;
        self.request_us.saturating_record(micros(d));
    }

    /// A failed attempt.
    pub fn record_error(&mut self, kind: &str) {
        self.errors += 1;
        *self.errors_by_kind.entry(kind.to_string()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Stats) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.connect_us.add(&other.connect_us);
        let _ = self.request_us.add(&other.request_us);
        self.requests += other.requests;
        self.errors += other.errors;
        self.connections += other.connections;
        for (k, v) in &other.errors_by_kind {
            *self.errors_by_kind.entry(k.clone()).or_default() += v;
        }
    }

    /// The report of a run that took `elapsed`. Percentiles of an empty histogram are 0.
    pub fn report(&self, elapsed: Duration) -> Report {
        let q = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        let secs = elapsed.as_secs_f64();
        Report {
            requests: self.requests,
            errors: self.errors,
            connections: self.connections,
            duration: elapsed,
            rate_per_s: if secs > 0.0 {
                self.requests as f64 / secs
            } else {
                0.0
            },
            connect_p50_us: q(&self.connect_us, 0.5),
            connect_p99_us: q(&self.connect_us, 0.99),
            connect_p999_us: q(&self.connect_us, 0.999),
            request_p50_us: q(&self.request_us, 0.5),
            request_p99_us: q(&self.request_us, 0.99),
            request_p999_us: q(&self.request_us, 0.999),
            errors_by_kind: self.errors_by_kind.clone(),
            cpu_seconds: None,
        }
    }
}

/// The shared cap on attempts.
struct Tickets(AtomicU64);

impl Tickets {
    fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// New-connection load on `target` from namespace `ns`: see the [module docs](self).
pub fn new_connections(
    ns: &str,
    target: SocketAddrV4,
    concurrency: usize,
    duration: Duration,
    max_requests: u64,
) -> anyhow::Result<Report> {
    run(
        ns,
        target,
        Mode::NewConnections,
        concurrency,
        duration,
        max_requests,
    )
}

/// Keep-alive load on `target` from namespace `ns`: see the [module docs](self).
pub fn keepalive_requests(
    ns: &str,
    target: SocketAddrV4,
    concurrency: usize,
    duration: Duration,
    max_requests: u64,
) -> anyhow::Result<Report> {
    run(
        ns,
        target,
        Mode::KeepAlive,
        concurrency,
        duration,
        max_requests,
    )
}

/// Run `mode` with `concurrency` workers (at least 1) for at most `duration` and at most
/// `max_requests` attempts. Fails only if a worker cannot be started or cannot enter `ns`.
pub fn run(
    ns: &str,
    target: SocketAddrV4,
    mode: Mode,
    concurrency: usize,
    duration: Duration,
    max_requests: u64,
) -> anyhow::Result<Report> {
    run_spec(&Spec {
        ns: ns.into(),
        target,
        mode,
        concurrency,
        duration,
        max_requests,
        cpu_cgroup: None,
    })
}

/// Run `spec` from threads of this process; see [`run`]. Also fails if the CPU time was
/// asked for and cannot be read.
pub fn run_spec(spec: &Spec) -> anyhow::Result<Report> {
    let Spec {
        ref ns,
        target,
        mode,
        concurrency,
        duration,
        max_requests,
        ref cpu_cgroup,
    } = *spec;
    let ns = ns.as_str();
    let cpu_now = || -> anyhow::Result<Option<Duration>> {
        cpu_cgroup
            .as_deref()
            .map(crate::cpu::lab_cpu)
            .transpose()
            .context("reading the lab's CPU time")
    };
    let workers = concurrency.max(1);
    let tickets = Tickets(AtomicU64::new(max_requests));
    let merged = Mutex::new(Stats::new());
    // The start gate: held (write) by this thread until every worker has entered the
    // namespace; workers block on a read lock, so they all start together.
    let gate = RwLock::new(());
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (elapsed, results) = std::thread::scope(|s| {
        let held = gate.write().unwrap_or_else(|p| p.into_inner());
        let mut handles = Vec::with_capacity(workers);
        let mut spawn_error = None;
        for i in 0..workers {
            let (tickets, merged, gate, ready) = (&tickets, &merged, &gate, ready_tx.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("load-{i}"))
                .spawn_scoped(s, move || -> io::Result<()> {
                    let entered = svc_lab::netns::enter_netns(ns);
                    let _ = ready.send(());
                    drop(gate.read().unwrap_or_else(|p| p.into_inner()));
                    entered?;
                    let deadline = Instant::now() + duration;
                    let mut stats = Stats::new();
                    match mode {
                        Mode::NewConnections => {
                            new_connection_loop(target, deadline, tickets, &mut stats)
                        }
                        Mode::KeepAlive => keepalive_loop(target, deadline, tickets, &mut stats),
                        Mode::Paced { per_second } => {
                            // Each worker's share, the workers evenly staggered.
                            let interval = Duration::from_secs_f64(
                                workers as f64 / f64::from(per_second.max(1)),
                            );
                            let offset = interval.mul_f64(i as f64 / workers as f64);
                            paced_loop(target, deadline, tickets, &mut stats, interval, offset)
                        }
                    }
                    merged
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .merge(&stats);
                    Ok(())
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // Nothing runs yet: take no tickets, let the spawned ones end at once.
                    tickets.0.store(0, Ordering::Relaxed);
                    spawn_error = Some(e);
                    break;
                }
            }
        }
        for _ in 0..handles.len() {
            let _ = ready_rx.recv();
        }
        let cpu_before = cpu_now();
        let start = Instant::now();
        drop(held);
        let results: Vec<io::Result<()>> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .chain(spawn_error.map(Err))
            .collect();
        let elapsed = start.elapsed();
        let cpu = cpu_before.and_then(|before| {
            Ok(before
                .zip(cpu_now()?)
                .map(|(a, b)| b.saturating_sub(a).as_secs_f64()))
        });
        ((elapsed, cpu), results)
    });
    let (elapsed, cpu_seconds) = elapsed;
    for r in results {
        r.with_context(|| format!("load worker in {ns}"))?;
    }
    let cpu_seconds = cpu_seconds?;
    let stats = merged.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(Report {
        cpu_seconds,
        ..stats.report(elapsed)
    })
}

/// How long a load process may run beyond its spec's duration (start, the operations in
/// flight at the deadline, the report) before it is killed.
pub const PROCESS_GRACE: Duration = Duration::from_secs(30);

/// Run `spec` in a process of its own: `cmd` is the `svc-bench-load` binary, prepared by the
/// caller (e.g. in a pod's namespace and cgroup, `svc_lab::Lab::pod_command`); it gets
/// `--spec JSON` and prints the [`Report`] as JSON. Bounded: killed after the spec's
/// duration plus [`PROCESS_GRACE`].
pub fn run_process(mut cmd: Command, spec: &Spec) -> anyhow::Result<Report> {
    let json = serde_json::to_string(spec)?;
    let dir = tempfile_dir()?;
    let (out, err) = (dir.join("report.json"), dir.join("stderr"));
    let result = (|| {
        let mut child = cmd
            .arg("--spec")
            .arg(&json)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?)
            .spawn()
            .context("starting svc-bench-load")?;
        let deadline = Instant::now() + spec.duration + PROCESS_GRACE;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!(
                    "svc-bench-load ran past {:?} and was killed",
                    spec.duration + PROCESS_GRACE
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = std::fs::read_to_string(&err).unwrap_or_default();
        anyhow::ensure!(
            status.success(),
            "svc-bench-load {status}: {}",
            stderr.trim()
        );
        let text = std::fs::read_to_string(&out)?;
        serde_json::from_str::<Report>(&text)
            .with_context(|| format!("svc-bench-load printed no report: {text:?} {stderr:?}"))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A private temp directory named with this process's pid (`svb-<pid>-load-N`, which the
/// bench's Ctrl-C teardown removes).
fn tempfile_dir() -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "svb-{}-load-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `stage: kind` for an I/O error, with timeouts under one name whichever way the OS said it.
fn error_kind(stage: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!("{stage}: timed out"),
        k => format!("{stage}: {k}"),
    }
}

fn pause_after_error(deadline: Instant) {
    let now = Instant::now();
    if now < deadline {
        std::thread::sleep(ERROR_PAUSE.min(deadline - now));
    }
}

/// A connected client socket: SO_LINGER {on, 0} (close sends a RST, no TIME_WAIT),
/// TCP_NODELAY, and read/write timeouts of [`OP_TIMEOUT`].
fn connect(target: SocketAddrV4) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&SocketAddr::V4(target), OP_TIMEOUT)?;
    set_linger_zero(&s)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(OP_TIMEOUT))?;
    s.set_write_timeout(Some(OP_TIMEOUT))?;
    Ok(s)
}

fn set_linger_zero(s: &TcpStream) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `l` (a plain struct of the size we pass) from our own fd.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Connect, recording the latency or the error.
fn timed_connect(target: SocketAddrV4, stats: &mut Stats) -> Option<TcpStream> {
    let t0 = Instant::now();
    match connect(target) {
        Ok(s) => {
            stats.record_connect(t0.elapsed());
            Some(s)
        }
        Err(e) => {
            stats.record_error(&error_kind("connect", &e));
            None
        }
    }
}

/// Send `request` on `s` and read the whole response, recording the outcome. Returns whether
/// the connection may carry another request.
fn timed_request(s: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>, stats: &mut Stats) -> bool {
    let t0 = Instant::now();
    if let Err(e) = s.write_all(request) {
        stats.record_error(&error_kind("write", &e));
        return false;
    }
    match read_response(s, buf) {
        Ok(r) if (200..300).contains(&r.status) => {
            stats.record_request(t0.elapsed());
            r.keep_alive
        }
        Ok(r) => {
            stats.record_error(&format!("http: status {}", r.status));
            r.keep_alive
        }
        Err(e) => {
            stats.record_error(&e.kind_label());
            false
        }
    }
}

fn new_connection_loop(
    target: SocketAddrV4,
    deadline: Instant,
    tickets: &Tickets,
    stats: &mut Stats,
) {
    let mut buf = Vec::with_capacity(4096);
    while Instant::now() < deadline && tickets.take() {
        let Some(mut s) = timed_connect(target, stats) else {
            pause_after_error(deadline);
            continue;
        };
        let errors = stats.errors;
        timed_request(&mut s, REQUEST_CLOSE, &mut buf, stats);
        drop(s); // RST (SO_LINGER 0)
        if stats.errors != errors {
            pause_after_error(deadline);
        }
    }
}

/// New connections at one every `interval`, the first after `offset`: a worker that falls
/// behind (a slow connection) goes on from now, so the offered rate never bursts.
fn paced_loop(
    target: SocketAddrV4,
    deadline: Instant,
    tickets: &Tickets,
    stats: &mut Stats,
    interval: Duration,
    offset: Duration,
) {
    let mut buf = Vec::with_capacity(4096);
    let mut next = Instant::now() + offset;
    while next < deadline {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        if !tickets.take() {
            break;
        }
        if let Some(mut s) = timed_connect(target, stats) {
            timed_request(&mut s, REQUEST_CLOSE, &mut buf, stats);
            drop(s); // RST (SO_LINGER 0)
        }
        next = (next + interval).max(Instant::now());
    }
}

fn keepalive_loop(target: SocketAddrV4, deadline: Instant, tickets: &Tickets, stats: &mut Stats) {
    let mut buf = Vec::with_capacity(4096);
    let mut conn: Option<TcpStream> = None;
    while Instant::now() < deadline && tickets.take() {
        if conn.is_none() {
            conn = timed_connect(target, stats);
            if conn.is_none() {
                pause_after_error(deadline);
                continue;
            }
        }
        let Some(s) = conn.as_mut() else { continue };
        let errors = stats.errors;
        if !timed_request(s, REQUEST_KEEPALIVE, &mut buf, stats) {
            conn = None;
        }
        if stats.errors != errors {
            pause_after_error(deadline);
        }
    }
}

/// A response read by [`read_response`]; its bytes are in the buffer passed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The connection may carry another request (HTTP/1.1 without `Connection: close`, or
    /// HTTP/1.0 with `Connection: keep-alive`; and a length-delimited body).
    pub keep_alive: bool,
    /// Length of the status line and headers, blank line included.
    pub head_len: usize,
    pub body_len: usize,
}

impl Response {
    /// The body within the buffer `read_response` filled.
    pub fn body<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.head_len..self.head_len + self.body_len]
    }
}

/// Why a response could not be read.
#[derive(Debug)]
pub enum ResponseError {
    /// A socket error (timeouts included).
    Io(io::Error),
    /// The peer closed before sending a byte.
    ClosedBeforeResponse,
    /// The peer closed in the middle of the response.
    Truncated,
    /// Not a response we understand: a bad status line, an oversized head or body, a chunked
    /// body (neither nginx's `return` nor the echo servers send one), bytes after the body.
    Malformed(&'static str),
}

impl ResponseError {
    /// The key under which [`Stats`] counts it.
    pub fn kind_label(&self) -> String {
        match self {
            ResponseError::Io(e) => error_kind("read", e),
            ResponseError::ClosedBeforeResponse => "read: closed before a response".into(),
            ResponseError::Truncated => "read: closed mid-response".into(),
            ResponseError::Malformed(why) => format!("http: {why}"),
        }
    }
}

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseError::Io(e) => write!(f, "{e}"),
            _ => f.write_str(&self.kind_label()),
        }
    }
}

impl std::error::Error for ResponseError {}

fn read_some<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> Result<usize, ResponseError> {
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ResponseError::Io(e)),
        }
    }
}

/// Read one whole HTTP/1.x response from `r` into `buf` (cleared first): the head, then a
/// `Content-Length` body, or, without one, a body up to EOF (no body for 1xx/204/304).
pub fn read_response<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> Result<Response, ResponseError> {
    buf.clear();
    let head_len = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(ResponseError::Malformed("response head too long"));
        }
        if read_some(r, buf)? == 0 {
            return Err(if buf.is_empty() {
                ResponseError::ClosedBeforeResponse
            } else {
                ResponseError::Truncated
            });
        }
    };
    let head = std::str::from_utf8(&buf[..head_len])
        .map_err(|_| ResponseError::Malformed("response head is not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(ResponseError::Malformed("bad status line")),
    };
    let status: u16 = parts
        .next()
        .and_then(|c| (c.len() == 3).then_some(c))
        .and_then(|c| c.parse().ok())
        .ok_or(ResponseError::Malformed("bad status line"))?;
    let mut content_length: Option<usize> = None;
    let (mut close, mut keep) = (false, false);
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(ResponseError::Malformed("bad header line"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| ResponseError::Malformed("bad content-length"))?;
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && !value.eq_ignore_ascii_case("identity")
        {
            return Err(ResponseError::Malformed("transfer-encoding not supported"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    let persistent = if http11 { !close } else { keep && !close };
    let no_body = (100..200).contains(&status) || status == 204 || status == 304;
    let (body_len, keep_alive) = match content_length {
        _ if no_body => (0, persistent),
        Some(n) => {
            if n > MAX_BODY {
                return Err(ResponseError::Malformed("response body too long"));
            }
            while buf.len() < head_len + n {
                if read_some(r, buf)? == 0 {
                    return Err(ResponseError::Truncated);
                }
            }
            (n, persistent)
        }
        None => {
            // Delimited by the close: read to EOF; the connection is done.
            while read_some(r, buf)? != 0 {
                if buf.len() - head_len > MAX_BODY {
                    return Err(ResponseError::Malformed("response body too long"));
                }
            }
            (buf.len() - head_len, false)
        }
    };
    if buf.len() > head_len + body_len {
        return Err(ResponseError::Malformed("bytes after the response"));
    }
    Ok(Response {
        status,
        keep_alive,
        head_len,
        body_len,
    })
}

/// One `GET /` with `Connection: close` from namespace `ns`: the status and the body.
/// For checks (is the backend up, what does it answer); bounded by [`OP_TIMEOUT`] per step.
pub fn http_get(ns: &str, target: SocketAddrV4) -> anyhow::Result<(u16, Vec<u8>)> {
    svc_lab::netns::try_in_netns(ns, || -> anyhow::Result<(u16, Vec<u8>)> {
        let mut s = connect(target).with_context(|| format!("connecting to {target}"))?;
        s.write_all(REQUEST_CLOSE)?;
        let mut buf = Vec::new();
        let r = read_response(&mut s, &mut buf).with_context(|| format!("GET http://{target}/"))?;
        let _ = s.shutdown(Shutdown::Both);
        Ok((r.status, r.body(&buf).to_vec()))
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut s = Stats::new();
        for us in 1..=1000u64 {
            s.record_connect(Duration::from_micros(us));
            s.record_request(Duration::from_micros(us * 10));
        }
        let r = s.report(Duration::from_secs(2));
        assert_eq!(r.requests, 1000);
        assert_eq!(r.connections, 1000);
        assert_eq!(r.errors, 0);
        assert_eq!(r.rate_per_s, 500.0);
        assert_eq!(r.connect_p50_us, 500);
        assert_eq!(r.connect_p99_us, 990);
        assert_eq!(r.connect_p999_us, 999);
        // 3 significant digits: within 0.1 %.
        for (got, want) in [
            (r.request_p50_us, 5000),
            (r.request_p99_us, 9900),
            (r.request_p999_us, 9990),
        ] {
            assert!(got.abs_diff(want) <= want / 1000, "{got} vs {want}");
        }
    }

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut a = Stats::new();
        let mut b = Stats::new();
        for _ in 0..99 {
            a.record_request(Duration::from_micros(100));
        }
        b.record_request(Duration::from_millis(50));
        b.record_error("connect: connection refused");
        b.record_error("connect: connection refused");
        a.record_error("http: status 503");
        a.merge(&b);
        let r = a.report(Duration::from_secs(1));
        assert_eq!(r.requests, 100);
        assert_eq!(r.errors, 3);
        assert_eq!(r.request_p50_us, 100);
        assert!(r.request_p999_us >= 49_950, "{}", r.request_p999_us);
        assert_eq!(r.errors_by_kind["connect: connection refused"], 2);
        assert_eq!(r.errors_by_kind["http: status 503"], 1);
    }

    #[test]
    fn empty_and_extreme_values() {
        let r = Stats::new().report(Duration::ZERO);
        assert_eq!(
            (r.requests, r.rate_per_s, r.connect_p99_us, r.request_p50_us),
            (0, 0.0, 0, 0)
        );
        let mut s = Stats::new();
        s.record_request(Duration::ZERO); // clamped to 1 µs
        s.record_request(Duration::from_secs(3600)); // saturates at the top
        let r = s.report(Duration::from_secs(1));
        assert_eq!(r.requests, 2);
        assert_eq!(r.request_p50_us, 1);
        assert!(r.request_p999_us >= HIST_MAX_US * 999 / 1000);
    }

    #[test]
    fn report_serialises_with_seconds() {
        let mut s = Stats::new();
        s.record_request(Duration::from_micros(250));
        let r = s.report(Duration::from_millis(1500));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["duration"], 1.5);
        assert_eq!(v["requests"], 1);
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn tickets_cap_attempts() {
        let t = Tickets(AtomicU64::new(2));
        assert!(t.take() && t.take());
        assert!(!t.take() && !t.take());
    }

    /// A reader that hands out its bytes in small pieces, like a socket.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn parse(bytes: &[u8]) -> Result<(Response, Vec<u8>), ResponseError> {
        let mut buf = Vec::new();
        let r = read_response(&mut Trickle(bytes, 3), &mut buf)?;
        let body = r.body(&buf).to_vec();
        Ok((r, body))
    }

    #[test]
    fn nginx_style_response() {
        let (r, body) = parse(
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\n\
              Content-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n",
        )
        .unwrap();
        assert_eq!(
            (r.status, r.keep_alive, body.as_slice()),
            (200, true, &b"ok\n"[..])
        );
        let (r, _) =
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!r.keep_alive);
    }

    #[test]
    fn echo_server_style_response_runs_to_eof() {
        let (r, body) =
            parse(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\np1 10.244.1.20:40000\n")
                .unwrap();
        assert_eq!(r.status, 200);
        assert!(!r.keep_alive);
        assert_eq!(body, b"p1 10.244.1.20:40000\n");
    }

    #[test]
    fn http10_keep_alive_and_no_body_statuses() {
        let (r, _) =
            parse(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nhi")
                .unwrap();
        assert!(r.keep_alive);
        let (r, body) = parse(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!((r.status, r.keep_alive, body.len()), (204, true, 0));
        let (r, _) =
            parse(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 1\r\n\r\nx").unwrap();
        assert_eq!(r.status, 503);
    }

    #[test]
    fn broken_responses_are_errors_not_panics() {
        let label = |b: &[u8]| parse(b).unwrap_err().kind_label();
        assert_eq!(label(b""), "read: closed before a response");
        assert_eq!(
            label(b"HTTP/1.1 200 OK\r\nContent-Le"),
            "read: closed mid-response"
        );
        assert_eq!(
            label(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
            "read: closed mid-response"
        );
        assert_eq!(label(b"SSH-2.0-OpenSSH\r\n\r\n"), "http: bad status line");
        assert_eq!(label(b"HTTP/1.1 2000 OK\r\n\r\n"), "http: bad status line");
        assert_eq!(
            label(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            "http: transfer-encoding not supported"
        );
        assert_eq!(
            label(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            "http: bad content-length"
        );
        // Bytes beyond the body that arrived with it (a reader handing out everything at once).
        let mut buf = Vec::new();
        let extra = read_response(
            &mut Trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab", 4096),
            &mut buf,
        );
        assert_eq!(
            extra.unwrap_err().kind_label(),
            "http: bytes after the response"
        );
        assert_eq!(
            label(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"),
            "http: bad header line"
        );
        let huge = vec![b'a'; MAX_HEAD + 10];
        assert_eq!(label(&huge), "http: response head too long");
        assert_eq!(
            label(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    MAX_BODY + 1
                )
                .as_bytes()
            ),
            "http: response body too long"
        );
        // Socket errors keep their kind, timeouts under one name.
        let e = ResponseError::Io(io::Error::from(io::ErrorKind::WouldBlock));
        assert_eq!(e.kind_label(), "read: timed out");
        let e = ResponseError::Io(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(e.kind_label(), "read: connection reset");
    }
}
