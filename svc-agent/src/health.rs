//! healthCheckNodePort servers (note "healthCheckNodePort"), as kube-proxy's healthcheck
//! server: one small HTTP/1.1 listener per port of [`DesiredState::health_checks`], in the
//! agent's (the node's) network namespace. Any request path answers `200 OK` while this
//! node has ready local endpoints for the Service and `503 Service Unavailable` otherwise,
//! with kube-proxy's headers and JSON body:
//!
//! ```text
//! HTTP/1.1 200 OK
//! Content-Type: application/json
//! X-Content-Type-Options: nosniff
//! X-Load-Balancing-Endpoint-Weight: 1
//!
//! {"service":{"namespace":"ns","name":"n"},"localEndpoints":1,"serviceProxyHealthy":true}
//! ```
//!
//! Plain std threads (they predate the agent's tokio HTTP servers in `status`): one accept
//! loop per port polling
//! a non-blocking listener and a stop flag, and one short-lived thread per connection
//! (bounded in number, size and time). [`HealthServers::update`] starts listeners for new
//! ports, stops removed ones and changes the served counts in place, without rebinding.
//!
//! [`DesiredState::health_checks`]: crate::desired::DesiredState::health_checks
use std::{
    collections::BTreeMap,
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracing::{debug, info, warn};

use crate::{desired::HealthCheck, model::ObjectRef};

/// How often an accept loop looks at its stop flag when no connection arrives.
const ACCEPT_POLL: Duration = Duration::from_millis(50);
/// A client gets this long to send its request headers, and to take the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests whose headers do not end within this many bytes get 400 Bad Request.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Connections handled at once per port; more are closed without an answer.
const MAX_IN_FLIGHT: usize = 64;

/// What one port serves; shared between [`HealthServers`] and the port's threads.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Status {
    service: ObjectRef,
    local_endpoints: usize,
}

/// The answer to a health check request for `service` with `local_endpoints` ready local
/// endpoints: the whole HTTP/1.1 response, headers and (unless `head`) body.
pub fn response(service: &ObjectRef, local_endpoints: usize, head: bool) -> Vec<u8> {
    let status = if local_endpoints > 0 {
        "200 OK"
    } else {
        "503 Service Unavailable"
    };
    // Written out for kube-proxy's key order (serde_json's maps sort keys); serde_json
    // only quotes the names.
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let body = format!(
        r#"{{"service":{{"namespace":{},"name":{}}},"localEndpoints":{local_endpoints},"serviceProxyHealthy":true}}"#,
        quote(&service.namespace),
        quote(&service.name)
    );
    let mut out = format!(
        "HTTP/1.1 {status}\r\n\
         Content-Type: application/json\r\n\
         X-Content-Type-Options: nosniff\r\n\
         X-Load-Balancing-Endpoint-Weight: {local_endpoints}\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         \r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// What came in on a connection, as far as the server cares.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// A request line (any method and path); `head` for HEAD, which gets no body.
    Valid { head: bool },
    /// Not HTTP, or headers over [`MAX_REQUEST_HEAD`].
    Bad,
    /// The client sent nothing usable before closing or timing out.
    Nothing,
}

/// Classifies the bytes read so far. `complete`: the headers ended, the client closed, or
/// the size limit was hit.
fn parse_head(buf: &[u8], complete: bool) -> Option<Request> {
    let ended = buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n");
    if !ended && !complete {
        return None;
    }
    let line_end = buf.iter().position(|&b| b == b'\n');
    let Some(line_end) = line_end else {
        return Some(if buf.is_empty() {
            Request::Nothing
        } else {
            Request::Bad
        });
    };
    if !ended && buf.len() >= MAX_REQUEST_HEAD {
        return Some(Request::Bad);
    }
    let line = String::from_utf8_lossy(&buf[..line_end]);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(_path), Some(version))
            if version.starts_with("HTTP/") && method.bytes().all(|b| b.is_ascii_uppercase()) =>
        {
            Some(Request::Valid {
                head: method == "HEAD",
            })
        }
        _ => Some(Request::Bad),
    }
}

/// Reads up to the end of the request headers (bounded in size and time), ignores the
/// rest, answers from `status`, and closes.
fn serve_connection(mut stream: TcpStream, status: &Mutex<Status>) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let request = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break parse_head(&buf, true).unwrap_or(Request::Nothing);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => break parse_head(&buf, true).unwrap_or(Request::Nothing),
            Ok(n) => {
                let room = MAX_REQUEST_HEAD - buf.len();
                buf.extend_from_slice(&chunk[..n.min(room)]);
                let full = buf.len() >= MAX_REQUEST_HEAD;
                if let Some(r) = parse_head(&buf, full) {
                    break r;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // Out of time: answer a request line that made it, drop anything else.
                break match parse_head(&buf, true) {
                    Some(Request::Valid { head }) => Request::Valid { head },
                    _ => Request::Nothing,
                };
            }
            Err(e) => return Err(e),
        }
    };
    let answer = match request {
        Request::Valid { head } => {
            let s = status.lock().unwrap_or_else(|e| e.into_inner()).clone();
            response(&s.service, s.local_endpoints, head)
        }
        Request::Bad => BAD_REQUEST.to_vec(),
        Request::Nothing => return Ok(()),
    };
    stream.write_all(&answer)?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// One port's listener thread.
struct Server {
    status: Arc<Mutex<Status>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(addr: SocketAddr, status: Status) -> io::Result<Server> {
        // std sets SO_REUSEADDR on Unix, so a port left in TIME_WAIT binds again at once.
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let status = Arc::new(Mutex::new(status));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name(format!("health-{port}"))
            .spawn({
                let status = status.clone();
                let stop = stop.clone();
                move || accept_loop(listener, status, stop)
            })?;
        Ok(Server {
            status,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    /// Stops accepting and waits for the accept loop (at most [`ACCEPT_POLL`]), so the
    /// port is free when this returns. Connections in flight finish on their own.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, status: Arc<Mutex<Status>>, stop: Arc<AtomicBool>) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                    debug!(%peer, "health check: too many connections, closing");
                    continue;
                }
                let status = status.clone();
                let count = in_flight.clone();
                let spawned = std::thread::Builder::new()
                    .name("health-conn".into())
                    .spawn(move || {
                        if let Err(e) = serve_connection(stream, &status) {
                            debug!(%peer, error = %e, "health check connection");
                        }
                        count.fetch_sub(1, Ordering::AcqRel);
                    });
                if let Err(e) = spawned {
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                    warn!(error = %e, "health check: cannot spawn a connection thread");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // E.g. EMFILE: back off instead of spinning.
                warn!(error = %e, "health check: accept failed");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

/// The healthCheckNodePort listeners, one per port, kept in line with the desired state.
pub struct HealthServers {
    bind: Ipv4Addr,
    servers: BTreeMap<u16, Server>,
}

impl Default for HealthServers {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthServers {
    /// Listeners on 0.0.0.0 (every address of the namespace), as kube-proxy without
    /// --nodeport-addresses.
    pub fn new() -> HealthServers {
        Self::with_bind_addr(Ipv4Addr::UNSPECIFIED)
    }

    /// Listeners on `bind` only (tests use 127.0.0.1).
    pub fn with_bind_addr(bind: Ipv4Addr) -> HealthServers {
        HealthServers {
            bind,
            servers: BTreeMap::new(),
        }
    }

    /// Ports with a running listener.
    pub fn ports(&self) -> Vec<u16> {
        self.servers.keys().copied().collect()
    }

    /// Makes the listeners match `checks`: stops the ports no longer wanted, updates the
    /// Service and count of running ones in place, and starts the new ones. A port that
    /// cannot be bound (e.g. in use) is logged with its Service and tried again on the
    /// next update.
    pub fn update(&mut self, checks: &[HealthCheck]) {
        let wanted: BTreeMap<u16, &HealthCheck> = checks.iter().map(|c| (c.port, c)).collect();
        self.servers.retain(|port, server| {
            let keep = wanted.contains_key(port);
            if !keep {
                let service = server
                    .status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .service
                    .clone();
                info!(port, service = %service, "stopping health check server");
            }
            keep
        });
        for (port, check) in wanted {
            let status = Status {
                service: check.service.clone(),
                local_endpoints: check.local_endpoints,
            };
            if let Some(server) = self.servers.get(&port) {
                let mut current = server.status.lock().unwrap_or_else(|e| e.into_inner());
                if *current != status {
                    debug!(
                        port,
                        service = %status.service,
                        local_endpoints = status.local_endpoints,
                        "health check updated"
                    );
                    *current = status;
                }
                continue;
            }
            let addr = SocketAddr::V4(SocketAddrV4::new(self.bind, port));
            match Server::start(addr, status) {
                Ok(server) => {
                    info!(
                        port,
                        service = %check.service,
                        local_endpoints = check.local_endpoints,
                        "serving health check"
                    );
                    self.servers.insert(port, server);
                }
                Err(e) => warn!(
                    port,
                    service = %check.service,
                    error = %e,
                    "cannot listen on healthCheckNodePort; will retry"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, port: u16, local_endpoints: usize) -> HealthCheck {
        HealthCheck {
            service: ObjectRef::new("default", name),
            port,
            local_endpoints,
        }
    }

    /// A port that was free a moment ago (bind port 0, release).
    fn free_port() -> u16 {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Sends `request` to 127.0.0.1:port and returns the whole answer.
    fn send(port: u16, request: &[u8]) -> io::Result<String> {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(request)?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    fn get(port: u16) -> io::Result<String> {
        send(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    }

    fn split(resp: &str) -> (&str, &str) {
        resp.split_once("\r\n\r\n").expect("headers end")
    }

    #[test]
    fn health_response_200_with_local_endpoints() {
        let resp = String::from_utf8(response(&ObjectRef::new("ns", "n"), 2, false)).unwrap();
        let (head, body) = split(&resp);
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some("HTTP/1.1 200 OK"));
        let headers: Vec<&str> = lines.collect();
        for h in [
            "Content-Type: application/json",
            "X-Content-Type-Options: nosniff",
            "X-Load-Balancing-Endpoint-Weight: 2",
            "Connection: close",
        ] {
            assert!(headers.contains(&h), "{h} missing in {headers:?}");
        }
        assert!(headers.contains(&format!("Content-Length: {}", body.len()).as_str()));
        assert_eq!(
            body,
            r#"{"service":{"namespace":"ns","name":"n"},"localEndpoints":2,"serviceProxyHealthy":true}"#
        );
    }

    #[test]
    fn health_response_503_without_local_endpoints() {
        let resp = String::from_utf8(response(&ObjectRef::new("ns", "n"), 0, false)).unwrap();
        let (head, body) = split(&resp);
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nX-Load-Balancing-Endpoint-Weight: 0"));
        assert!(head.contains("\r\nContent-Type: application/json"));
        assert_eq!(
            body,
            r#"{"service":{"namespace":"ns","name":"n"},"localEndpoints":0,"serviceProxyHealthy":true}"#
        );
        // HEAD: same headers, no body.
        let head_only = String::from_utf8(response(&ObjectRef::new("ns", "n"), 0, true)).unwrap();
        assert_eq!(split(&head_only).1, "");
    }

    #[test]
    fn health_names_are_json_escaped() {
        let resp = String::from_utf8(response(&ObjectRef::new("a\"b", "c\\d"), 1, false)).unwrap();
        let v: serde_json::Value = serde_json::from_str(split(&resp).1).unwrap();
        assert_eq!(v["service"]["namespace"], "a\"b");
        assert_eq!(v["service"]["name"], "c\\d");
    }

    #[test]
    fn health_request_parsing() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost", false), None);
        assert_eq!(
            parse_head(b"GET /x HTTP/1.1\r\nHost: y\r\n\r\n", false),
            Some(Request::Valid { head: false })
        );
        assert_eq!(
            parse_head(b"HEAD / HTTP/1.0\n\n", false),
            Some(Request::Valid { head: true })
        );
        assert_eq!(parse_head(b"hello\r\n\r\n", false), Some(Request::Bad));
        assert_eq!(parse_head(b"", true), Some(Request::Nothing));
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.resize(MAX_REQUEST_HEAD, b'a');
        assert_eq!(parse_head(&big, true), Some(Request::Bad));
    }

    #[test]
    fn health_update_adds_changes_and_removes_listeners() {
        let (p1, p2) = (free_port(), free_port());
        let mut servers = HealthServers::with_bind_addr(Ipv4Addr::LOCALHOST);
        servers.update(&[check("a", p1, 1), check("b", p2, 0)]);
        assert_eq!(servers.ports().len(), 2);

        let a = get(p1).unwrap();
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
        assert!(a.ends_with(r#"{"service":{"namespace":"default","name":"a"},"localEndpoints":1,"serviceProxyHealthy":true}"#), "{a}");
        let b = get(p2).unwrap();
        assert!(b.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{b}");
        assert!(b.contains(r#""localEndpoints":0"#), "{b}");

        // Count changes flip the answers in place: a connection opened before the update
        // is still accepted by the same listener.
        let mut early = TcpStream::connect((Ipv4Addr::LOCALHOST, p1)).unwrap();
        servers.update(&[check("a", p1, 0), check("b", p2, 3)]);
        early
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut early_answer = String::new();
        early.read_to_string(&mut early_answer).unwrap();
        assert!(early_answer.starts_with("HTTP/1.1 503 "), "{early_answer}");
        let b = get(p2).unwrap();
        assert!(b.starts_with("HTTP/1.1 200 OK\r\n"), "{b}");
        assert!(b.contains("X-Load-Balancing-Endpoint-Weight: 3\r\n"), "{b}");

        // Removal closes the port.
        servers.update(&[check("b", p2, 3)]);
        assert_eq!(servers.ports(), vec![p2]);
        assert_eq!(
            get(p1).unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
        assert!(get(p2).unwrap().starts_with("HTTP/1.1 200 OK"));

        // Dropping the servers closes everything.
        drop(servers);
        assert_eq!(
            get(p2).unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
    }

    #[test]
    fn health_bind_failure_is_retried_on_the_next_update() {
        let blocker = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = blocker.local_addr().unwrap().port();
        let mut servers = HealthServers::with_bind_addr(Ipv4Addr::LOCALHOST);
        servers.update(&[check("a", port, 1)]);
        assert!(servers.ports().is_empty(), "port in use: no listener");
        drop(blocker);
        servers.update(&[check("a", port, 1)]);
        assert_eq!(servers.ports(), vec![port]);
        assert!(get(port).unwrap().starts_with("HTTP/1.1 200 OK"));
    }

    #[test]
    fn health_bad_and_silent_clients() {
        let port = free_port();
        let mut servers = HealthServers::with_bind_addr(Ipv4Addr::LOCALHOST);
        servers.update(&[check("a", port, 1)]);
        let bad = send(port, b"\x16\x03\x01garbage\r\n\r\n").unwrap();
        assert!(bad.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{bad}");
        // A client that connects and closes without a request gets nothing, and the
        // server keeps answering.
        drop(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap());
        // Headers split over several writes.
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        s.write_all(b"GET / HT").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(b"TP/1.1\r\nHost: x\r\n\r\nbody ignored")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    }
}
