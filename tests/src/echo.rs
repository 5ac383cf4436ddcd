//! Echo servers that run inside the backend pods, and the parser for their replies.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns;

/// How often blocked server threads wake up to look at the shutdown flag.
const POLL: Duration = Duration::from_millis(100);
/// Cap on concurrent TCP connections per pod, so a runaway client cannot exhaust threads.
const MAX_CONNS_PER_POD: usize = 512;
/// Longest line a TCP connection may send before it is dropped (keeps memory bounded).
const MAX_LINE: usize = 64 * 1024;

/// One reply from an echo server: `"<pod> <client_ip>:<client_port>[ <rest>]"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoReply {
    /// Name of the pod that answered ("p1", ...): tells which backend was chosen.
    pub pod: String,
    /// Source address the server saw: tells whether/how the client was SNATed.
    pub client: SocketAddrV4,
    /// For TCP line echoes, the echoed line; empty otherwise.
    pub rest: String,
}

impl EchoReply {
    /// Parse one reply line (trailing newline optional).
    pub fn parse(s: &str) -> io::Result<EchoReply> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad echo reply: {s:?}"));
        let line = s.trim_end_matches(['\r', '\n']);
        let (pod, tail) = line.split_once(' ').ok_or_else(bad)?;
        let (addr, rest) = match tail.split_once(' ') {
            Some((a, r)) => (a, r),
            None => (tail, ""),
        };
        let client: SocketAddrV4 = addr.parse().map_err(|_| bad())?;
        if pod.is_empty() {
            return Err(bad());
        }
        Ok(EchoReply {
            pod: pod.to_string(),
            client,
            rest: rest.to_string(),
        })
    }
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        // Everything in the lab is IPv4; keep the port and show an obviously odd address.
        SocketAddr::V6(a) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, a.port()),
    }
}

/// The running TCP+UDP echo servers of all backend pods.
pub struct EchoServers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    conns: Arc<AtomicUsize>,
}

impl EchoServers {
    /// Start a TCP and a UDP server on 0.0.0.0:`port` in each `(pod name, netns)`.
    /// Returns once every socket is bound, or the first bind error.
    pub fn start(pods: &[(String, String)], port: u16) -> anyhow::Result<EchoServers> {
        let mut servers = EchoServers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            conns: Arc::new(AtomicUsize::new(0)),
        };
        let (tx, rx) = mpsc::channel::<io::Result<()>>();
        for (pod, ns) in pods {
            for udp in [false, true] {
                let (pod, ns, tx) = (pod.clone(), ns.clone(), tx.clone());
                let stop = servers.stop.clone();
                let conns = servers.conns.clone();
                let name = format!("echo-{}-{pod}", if udp { "udp" } else { "tcp" });
                let h = std::thread::Builder::new().name(name).spawn(move || {
                    if let Err(e) = netns::enter_netns(&ns) {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    if udp {
                        udp_server(&pod, port, &stop, tx)
                    } else {
                        tcp_server(&pod, port, &stop, &conns, tx)
                    }
                })?;
                servers.threads.push(h);
            }
        }
        drop(tx);
        for _ in 0..pods.len() * 2 {
            // Dropping `servers` on error stops the threads that did start.
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => anyhow::bail!("echo server failed to start: {e}"),
                Err(e) => anyhow::bail!("echo server did not report readiness: {e}"),
            }
        }
        Ok(servers)
    }

    /// Number of TCP connections currently being served (all pods).
    pub fn open_connections(&self) -> usize {
        self.conns.load(Ordering::Relaxed)
    }

    /// Ask every thread to stop and wait (bounded) for them. Idempotent.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(3);
        // Connection threads are detached but watch the same flag; wait for them too.
        while (self.threads.iter().any(|t| !t.is_finished()) || self.open_connections() > 0)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for t in self.threads.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            } else {
                eprintln!(
                    "svc-lab: echo thread {:?} did not stop in time",
                    t.thread().name()
                );
            }
        }
    }
}

impl Drop for EchoServers {
    fn drop(&mut self) {
        self.stop();
    }
}

fn udp_server(pod: &str, port: u16, stop: &AtomicBool, ready: mpsc::Sender<io::Result<()>>) {
    let sock = match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))
        .and_then(|s| s.set_read_timeout(Some(POLL)).map(|_| s))
    {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(
                e.kind(),
                format!("{pod} udp bind: {e}"),
            )));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((_, from)) => {
                let reply = format!("{pod} {}\n", v4(from));
                let _ = sock.send_to(reply.as_bytes(), from);
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            // e.g. ICMP errors surfacing as ECONNREFUSED: keep serving.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn tcp_server(
    pod: &str,
    port: u16,
    stop: &Arc<AtomicBool>,
    conns: &Arc<AtomicUsize>,
    ready: mpsc::Sender<io::Result<()>>,
) {
    // Nonblocking accept so the loop can notice the shutdown flag.
    let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
    {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(
                e.kind(),
                format!("{pod} tcp bind: {e}"),
            )));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                if conns.load(Ordering::Relaxed) >= MAX_CONNS_PER_POD {
                    continue; // dropped: client sees a close
                }
                conns.fetch_add(1, Ordering::SeqCst);
                let (pod, stop, conns2) = (pod.to_string(), stop.clone(), conns.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("echo-conn-{pod}"))
                    .spawn(move || {
                        let _ = serve_conn(&pod, stream, v4(peer), &stop);
                        conns2.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    conns.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Serve one TCP connection: HTTP-ish if it starts with `GET `, else a line echo until EOF.
fn serve_conn(
    pod: &str,
    mut s: TcpStream,
    peer: SocketAddrV4,
    stop: &AtomicBool,
) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(POLL))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let _ = s.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut first = true;
    loop {
        // Handle every complete line already buffered.
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            if first && text.starts_with("GET ") {
                return serve_http(pod, s, peer, buf, stop);
            }
            first = false;
            s.write_all(format!("{pod} {peer} {text}\n").as_bytes())?;
        }
        if buf.len() > MAX_LINE {
            return Ok(());
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match s.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Minimal HTTP/1.0 answer so `curl http://VIP:port/` works.
fn serve_http(
    pod: &str,
    mut s: TcpStream,
    peer: SocketAddrV4,
    mut buf: Vec<u8>,
    stop: &AtomicBool,
) -> io::Result<()> {
    // Consume the request headers first: closing with unread data would send an RST,
    // which can make curl report "connection reset" instead of the response.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut chunk = [0u8; 4096];
    while !ends_headers(&buf)
        && Instant::now() < deadline
        && !stop.load(Ordering::Relaxed)
        && buf.len() < MAX_LINE
    {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let body = format!("{pod} {peer}\n");
    s.write_all(format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}").as_bytes())?;
    s.shutdown(Shutdown::Write)?;
    // Drain until the client closes (bounded) so our close does not turn into an RST.
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// True once `buf` (what followed the request line) holds the blank line ending the headers,
/// or is empty-line-first (HTTP/0.9 style `GET /\n` followed by nothing still waits).
fn ends_headers(buf: &[u8]) -> bool {
    buf.starts_with(b"\r\n")
        || buf.starts_with(b"\n")
        || buf.windows(4).any(|w| w == b"\r\n\r\n")
        || buf.windows(2).any(|w| w == b"\n\n")
}
