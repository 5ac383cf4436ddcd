//! healthCheckNodePort servers (note "healthCheckNodePort"), kube-proxy's
//! ServiceHealthServer: one small HTTP server per port of [`DesiredState::health_checks`],
//! in the agent's (the node's) network namespace, on the agent's tokio runtime. Any request
//! (any path, any method) answers `200 OK` while this node has ready local endpoints for
//! the Service and `503 Service Unavailable` otherwise, with kube-proxy's headers and JSON
//! body (HEAD: the same headers, no body):
//!
//! ```text
//! HTTP/1.1 200 OK
//! content-type: application/json
//! x-content-type-options: nosniff
//! x-load-balancing-endpoint-weight: 1
//! connection: close
//! content-length: 87
//! date: …
//!
//! {"service":{"namespace":"ns","name":"n"},"localEndpoints":1,"serviceProxyHealthy":true}
//! ```
//!
//! hyper writes header names in lower case; HTTP header names are case-insensitive, and
//! the clients (cloud load balancers' health checkers, Go's net/http) read them so. One
//! request per connection (`Connection: close`): a probe needs no more, and it keeps the
//! bound below simple. Bounded: hyper's request limits (malformed requests get 400, header
//! sections over its size or count limits 431), at most 64 connections at once per port
//! (`LIMITS`), each for at most 2 s.
//!
//! [`ServiceHealthServers::update`] starts servers for new ports, stops removed ones (the
//! port is free when it returns) and changes the served counts in place, without rebinding.
//!
//! [`DesiredState::health_checks`]: crate::desired::DesiredState::health_checks
use std::{
    collections::BTreeMap,
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse as _, Response},
};
use tokio::{
    runtime::Handle,
    sync::{oneshot, watch},
};
use tracing::{debug, info, warn};

use super::{Bounded, Closed, Limits};
use crate::{desired::HealthCheck, model::ObjectRef};

/// Per port: connections served at once (more wait in the accept queue), and how long one
/// may take to send its request and take the answer (a probe takes milliseconds).
const LIMITS: Limits = Limits {
    max_connections: 64,
    connection_time: Duration::from_secs(2),
};
/// How long stopping a port waits for its listener to close. The server's task closes it
/// as soon as it sees the stop, on another worker of the runtime: this only bounds the
/// wait should the runtime be stuck.
const STOP_WAIT: Duration = Duration::from_secs(1);

/// What one port serves; set by [`ServiceHealthServers::update`], read by each request.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Status {
    service: ObjectRef,
    local_endpoints: usize,
}

/// kube-proxy's header that weighs a node by its local endpoints.
const ENDPOINT_WEIGHT: HeaderName = HeaderName::from_static("x-load-balancing-endpoint-weight");

/// The answer to a health check request for `service` with `local_endpoints` ready local
/// endpoints. For HEAD, axum drops the body and keeps its Content-Length.
fn response(service: &ObjectRef, local_endpoints: usize) -> Response {
    let status = if local_endpoints > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // Written out for kube-proxy's key order (serde_json's maps sort keys); serde_json
    // only quotes the names.
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let body = format!(
        r#"{{"service":{{"namespace":{},"name":{}}},"localEndpoints":{local_endpoints},"serviceProxyHealthy":true}}"#,
        quote(&service.namespace),
        quote(&service.name)
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(ENDPOINT_WEIGHT, HeaderValue::from(local_endpoints));
    // hyper closes the connection after an answer that says so.
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Every request of a port, whatever its path and method.
async fn answer(State(status): State<watch::Receiver<Status>>) -> Response {
    let status = status.borrow().clone();
    response(&status.service, status.local_endpoints)
}

/// One port's server: a task of the runtime serving `answer`.
struct Server {
    addr: SocketAddr,
    status: watch::Sender<Status>,
    /// Dropping it stops the server.
    stop: Option<oneshot::Sender<()>>,
    closed: Closed,
}

impl Server {
    /// Binds `addr` and serves it in a new task. Must run in the runtime's context.
    fn start(addr: SocketAddr, status: Status) -> io::Result<Server> {
        let listener = super::bind(addr)?;
        let addr = listener.local_addr().unwrap_or(addr);
        let (listener, closed) = Bounded::new(listener, LIMITS);
        let (status, requests) = watch::channel(status);
        let (stop, stopped) = oneshot::channel::<()>();
        let router = Router::new().fallback(answer).with_state(requests);
        super::spawn(
            listener,
            router,
            async move {
                // Sent or dropped: either way, stop.
                let _ = stopped.await;
            },
            "health check server",
        );
        Ok(Server {
            addr,
            status,
            stop: Some(stop),
            closed,
        })
    }
}

impl Drop for Server {
    /// Stops accepting and waits (at most [`STOP_WAIT`]) for the listener to close, so the
    /// port is free when this returns. Requests in flight finish on their own.
    fn drop(&mut self) {
        drop(self.stop.take());
        if !self.closed.wait(STOP_WAIT) {
            warn!(addr = %self.addr, "health check server still listening after {STOP_WAIT:?}");
        }
    }
}

/// The healthCheckNodePort servers, one per port, kept in line with the desired state.
pub struct ServiceHealthServers {
    bind: Ipv4Addr,
    /// The runtime the servers run on: the one current when this was made.
    runtime: Handle,
    servers: BTreeMap<u16, Server>,
}

impl Default for ServiceHealthServers {
    /// As [`ServiceHealthServers::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceHealthServers {
    /// Servers on every address of the namespace, IPv4 and IPv6 (0.0.0.0: one dual-stack
    /// socket per port, see [`super::bind`]), as kube-proxy without --nodeport-addresses,
    /// so a load balancer may probe a node over either family; on the current tokio
    /// runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime context.
    pub fn new() -> ServiceHealthServers {
        Self::with_bind_addr(Ipv4Addr::UNSPECIFIED)
    }

    /// Servers on `bind` only (tests use 127.0.0.1), on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime context.
    pub fn with_bind_addr(bind: Ipv4Addr) -> ServiceHealthServers {
        ServiceHealthServers {
            bind,
            runtime: Handle::current(),
            servers: BTreeMap::new(),
        }
    }

    /// Ports with a running server.
    pub fn ports(&self) -> Vec<u16> {
        self.servers.keys().copied().collect()
    }

    /// Makes the servers match `checks`: stops the ports no longer wanted (the port is
    /// free when this returns), updates the Service and count of running ones in place,
    /// and starts the new ones. A port that cannot be bound (e.g. in use) is logged with
    /// its Service and tried again on the next update.
    ///
    /// Blocks briefly while a port closes: call it outside async code (the agent loop runs
    /// in `block_in_place`) so that the runtime's workers keep running the servers.
    pub fn update(&mut self, checks: &[HealthCheck]) {
        let wanted: BTreeMap<u16, &HealthCheck> = checks.iter().map(|c| (c.port, c)).collect();
        self.servers.retain(|port, server| {
            let keep = wanted.contains_key(port);
            if !keep {
                let service = server.status.borrow().service.clone();
                info!(port, service = %service, "stopping health check server");
            }
            keep
        });
        // Binding and spawning need the runtime's context, which a thread outside it
        // lacks.
        let _runtime = self.runtime.enter();
        for (port, check) in wanted {
            let status = Status {
                service: check.service.clone(),
                local_endpoints: check.local_endpoints,
            };
            if let Some(server) = self.servers.get(&port) {
                server.status.send_if_modified(|current| {
                    if *current == status {
                        return false;
                    }
                    debug!(
                        port,
                        service = %status.service,
                        local_endpoints = status.local_endpoints,
                        "health check updated"
                    );
                    *current = status;
                    true
                });
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
    //! Raw HTTP/1.1 exchanges over loopback: what a load balancer's health checker sees.
    use std::{
        io::{Read as _, Write as _},
        net::{Shutdown, TcpListener, TcpStream},
        time::Instant,
    };

    use tokio::runtime::Runtime;

    use super::*;

    /// The servers' runtime, as the agent's: multi-threaded, with IO and time.
    fn runtime() -> Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn check_of(service: ObjectRef, port: u16, local_endpoints: usize) -> HealthCheck {
        HealthCheck {
            service,
            port,
            local_endpoints,
        }
    }

    fn check(name: &str, port: u16, local_endpoints: usize) -> HealthCheck {
        check_of(ObjectRef::new("default", name), port, local_endpoints)
    }

    /// A port that was free a moment ago (bind port 0, release).
    fn free_port() -> u16 {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Sends `request` to 127.0.0.1:port and returns the whole answer (up to the server
    /// closing the connection).
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

    /// The status line and the header lines, names lowercased (they are case-insensitive;
    /// hyper sends them in lower case).
    fn head_lines(head: &str) -> (&str, Vec<String>) {
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default();
        let headers = lines
            .map(|l| match l.split_once(':') {
                Some((k, v)) => format!("{}: {}", k.to_ascii_lowercase(), v.trim()),
                None => l.to_string(),
            })
            .collect();
        (status, headers)
    }

    /// One server for `service` with `local_endpoints`, answering `request`.
    fn exchange(service: ObjectRef, local_endpoints: usize, request: &[u8]) -> String {
        let rt = runtime();
        let _rt = rt.enter();
        let port = free_port();
        let mut servers = ServiceHealthServers::with_bind_addr(Ipv4Addr::LOCALHOST);
        servers.update(&[check_of(service, port, local_endpoints)]);
        send(port, request).unwrap()
    }

    #[test]
    fn health_response_200_with_local_endpoints() {
        let resp = exchange(
            ObjectRef::new("ns", "n"),
            2,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        let (head, body) = split(&resp);
        let (status, headers) = head_lines(head);
        assert_eq!(status, "HTTP/1.1 200 OK");
        for h in [
            "content-type: application/json",
            "x-content-type-options: nosniff",
            "x-load-balancing-endpoint-weight: 2",
            "connection: close",
        ] {
            assert!(headers.iter().any(|l| l == h), "{h} missing in {headers:?}");
        }
        let length = format!("content-length: {}", body.len());
        assert!(headers.contains(&length), "{length} missing in {headers:?}");
        assert_eq!(
            body,
            r#"{"service":{"namespace":"ns","name":"n"},"localEndpoints":2,"serviceProxyHealthy":true}"#
        );
    }

    #[test]
    fn health_response_503_without_local_endpoints() {
        let resp = exchange(
            ObjectRef::new("ns", "n"),
            0,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        let (head, body) = split(&resp);
        let (status, headers) = head_lines(head);
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{head}");
        assert!(headers.contains(&"x-load-balancing-endpoint-weight: 0".into()));
        assert!(headers.contains(&"content-type: application/json".into()));
        assert_eq!(
            body,
            r#"{"service":{"namespace":"ns","name":"n"},"localEndpoints":0,"serviceProxyHealthy":true}"#
        );
        // HEAD: same headers (Content-Length of the body it would get), no body.
        let resp = exchange(
            ObjectRef::new("ns", "n"),
            0,
            b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        let (head_only, nothing) = split(&resp);
        let (status, head_headers) = head_lines(head_only);
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(nothing, "");
        let without_date = |h: &[String]| -> Vec<String> {
            h.iter()
                .filter(|l| !l.starts_with("date:"))
                .cloned()
                .collect()
        };
        assert_eq!(without_date(&head_headers), without_date(&headers));
    }

    #[test]
    fn health_names_are_json_escaped() {
        let resp = exchange(
            ObjectRef::new("a\"b", "c\\d"),
            1,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        let v: serde_json::Value = serde_json::from_str(split(&resp).1).unwrap();
        assert_eq!(v["service"]["namespace"], "a\"b");
        assert_eq!(v["service"]["name"], "c\\d");
    }

    /// What the hand-written server's request parsing decided, now hyper's: any method and
    /// path are answered (HEAD without body, also HTTP/1.0 with bare LF line ends); what is
    /// not HTTP, or too big, gets a 4xx; nothing gets nothing.
    #[test]
    fn health_any_request_is_answered_bad_ones_get_4xx() {
        let rt = runtime();
        let _rt = rt.enter();
        let port = free_port();
        let mut servers = ServiceHealthServers::with_bind_addr(Ipv4Addr::LOCALHOST);
        servers.update(&[check("a", port, 1)]);

        for request in [
            &b"GET /x HTTP/1.1\r\nHost: y\r\n\r\n"[..],
            b"POST /any/path?q=1 HTTP/1.1\r\nHost: y\r\nContent-Length: 3\r\n\r\nabc",
            b"OPTIONS * HTTP/1.1\r\nHost: y\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
        ] {
            let resp = send(port, request).unwrap();
            // hyper answers an HTTP/1.0 request as HTTP/1.0.
            let status = resp.split_once(' ').map(|(_, s)| s).unwrap_or_default();
            assert!(status.starts_with("200 OK\r\n"), "{request:?}: {resp}");
            assert!(
                resp.ends_with(r#""serviceProxyHealthy":true}"#),
                "{request:?}: {resp}"
            );
        }
        let resp = send(port, b"HEAD / HTTP/1.0\n\n").unwrap();
        assert!(resp.starts_with("HTTP/1.0 200 OK\r\n"), "{resp}");
        assert_eq!(split(&resp).1, "", "HEAD gets no body");

        let bad = send(port, b"hello\r\n\r\n").unwrap();
        assert!(bad.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{bad}");
        // A header section over hyper's limits (100 headers; its byte limit, ~400 KiB,
        // is not tested: the bytes it leaves unread make the kernel reset the connection).
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..200 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let resp = send(port, &many).unwrap();
        assert!(resp.starts_with("HTTP/1.1 431 "), "{resp}");

        // A client that closes its side without a request gets nothing back.
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert_eq!(out, "");
        assert!(
            get(port).unwrap().starts_with("HTTP/1.1 200 OK"),
            "still serving"
        );
    }

    #[test]
    fn health_update_adds_changes_and_removes_listeners() {
        let rt = runtime();
        let _rt = rt.enter();
        let (p1, p2) = (free_port(), free_port());
        let mut servers = ServiceHealthServers::with_bind_addr(Ipv4Addr::LOCALHOST);
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
        assert!(b.contains("x-load-balancing-endpoint-weight: 3\r\n"), "{b}");

        // Removal closes the port, by the time update returns.
        servers.update(&[check("b", p2, 3)]);
        assert_eq!(servers.ports(), vec![p2]);
        assert_eq!(
            get(p1).unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
        assert!(get(p2).unwrap().starts_with("HTTP/1.1 200 OK"));
        // And the port binds again at once.
        drop(TcpListener::bind((Ipv4Addr::LOCALHOST, p1)).expect("p1 free"));

        // Dropping the servers closes everything.
        drop(servers);
        assert_eq!(
            get(p2).unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
    }

    #[test]
    fn health_bind_failure_is_retried_on_the_next_update() {
        let rt = runtime();
        let _rt = rt.enter();
        let blocker = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = blocker.local_addr().unwrap().port();
        let mut servers = ServiceHealthServers::with_bind_addr(Ipv4Addr::LOCALHOST);
        servers.update(&[check("a", port, 1)]);
        assert!(servers.ports().is_empty(), "port in use: no listener");
        drop(blocker);
        servers.update(&[check("a", port, 1)]);
        assert_eq!(servers.ports(), vec![port]);
        assert!(get(port).unwrap().starts_with("HTTP/1.1 200 OK"));
    }

    #[test]
    fn health_bad_and_silent_clients() {
        let rt = runtime();
        let _rt = rt.enter();
        let port = free_port();
        let mut servers = ServiceHealthServers::with_bind_addr(Ipv4Addr::LOCALHOST);
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
        // A client that connects and says nothing is closed after the connection time.
        let started = Instant::now();
        let mut silent = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        silent
            .set_read_timeout(Some(LIMITS.connection_time * 3))
            .unwrap();
        let mut out = String::new();
        silent
            .read_to_string(&mut out)
            .expect("closed by the server");
        assert_eq!(out, "");
        let took = started.elapsed();
        assert!(
            took >= LIMITS.connection_time && took < LIMITS.connection_time * 2,
            "{took:?}"
        );
    }

    /// More clients than [`LIMITS`] allows at once: the extra one waits for a place (here,
    /// for the silent ones to run out of time) and is then answered.
    #[test]
    fn health_connections_are_bounded() {
        let rt = runtime();
        let _rt = rt.enter();
        let port = free_port();
        let mut servers = ServiceHealthServers::with_bind_addr(Ipv4Addr::LOCALHOST);
        servers.update(&[check("a", port, 1)]);
        let silent: Vec<TcpStream> = (0..LIMITS.max_connections)
            .map(|_| TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap())
            .collect();
        // Let the server accept them all before the extra one arrives.
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let answer = get(port).unwrap();
        let took = started.elapsed();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(
            took >= LIMITS.connection_time / 2 && took < LIMITS.connection_time * 2,
            "answered after {took:?}: it should have waited for a place"
        );
        drop(silent);
        // With places free again, answers come at once.
        let started = Instant::now();
        assert!(get(port).unwrap().starts_with("HTTP/1.1 200 OK"));
        assert!(started.elapsed() < LIMITS.connection_time / 2);
    }

    /// As the agent calls it: from its loop, in `block_in_place` on a worker of a
    /// multi-threaded runtime, and dropped in async code at the end.
    #[test]
    fn health_update_from_the_agent_loop() {
        let rt = runtime();
        let port = free_port();
        rt.block_on(async {
            let mut servers = ServiceHealthServers::with_bind_addr(Ipv4Addr::LOCALHOST);
            let servers = tokio::spawn(async move {
                tokio::task::block_in_place(|| {
                    servers.update(&[check("a", port, 2)]);
                    let answer = get(port).unwrap();
                    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
                    servers.update(&[]);
                    assert_eq!(
                        get(port).unwrap_err().kind(),
                        io::ErrorKind::ConnectionRefused
                    );
                    servers.update(&[check("a", port, 0)]);
                });
                servers
            })
            .await
            .unwrap();
            let answer = tokio::task::spawn_blocking(move || get(port))
                .await
                .unwrap()
                .unwrap();
            assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
            drop(servers);
            let refused = tokio::task::spawn_blocking(move || get(port))
                .await
                .unwrap();
            assert_eq!(
                refused.unwrap_err().kind(),
                io::ErrorKind::ConnectionRefused
            );
        });
    }
}
