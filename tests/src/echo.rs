//! Echo servers that run inside the backend pods, and the parser for their replies.
//!
//! Each pod gets four servers: TCP and UDP on 0.0.0.0:port, and TCP and UDP on [::]:port
//! (IPv6-only sockets, so the IPv4 ones stay plain IPv4 sockets). A reply names the client
//! as the server saw it: `10.244.1.20:40000`, or `[fd00:10:244:1::20]:40000` over IPv6.

use std::io::{self, Read, Write};
use std::net::{
    Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket,
};
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
/// The largest UDP payload IPv4 can carry (65,535 - 20 - 8).
pub const MAX_UDP_PAYLOAD: usize = 65_507;
/// What starts a datagram that asks for a sized answer: `big <N>\n` (see [`big_request`]).
const BIG_PREFIX: &[u8] = b"big ";

/// The filler byte at position `i` of a sized datagram (after its first line): a pattern
/// that shows a byte out of place, so a datagram put together from wrong fragments fails
/// the check even when its length is right.
pub fn filler(i: usize) -> u8 {
    (i % 251) as u8
}

/// `first_line` (a newline is appended) followed by filler up to `len` bytes in all (at
/// least the line).
pub fn sized_datagram(first_line: &str, len: usize) -> Vec<u8> {
    let mut d = format!("{first_line}\n").into_bytes();
    let head = d.len();
    d.extend((head..len.max(head)).map(filler));
    d
}

/// The first line of a sized datagram and whether the rest is the filler, byte for byte.
pub fn check_sized(datagram: &[u8]) -> Option<(&str, bool)> {
    let nl = datagram.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&datagram[..nl]).ok()?;
    let intact = datagram[nl + 1..]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == filler(nl + 1 + i));
    Some((line, intact))
}

/// A request of `len` bytes in all that asks the UDP echo server for an answer of
/// `reply_len` bytes: large datagrams both ways (IPv4 fragments above the MTU), and a
/// small question with a large answer, as DNS with EDNS.
pub fn big_request(len: usize, reply_len: usize) -> Vec<u8> {
    sized_datagram(&format!("big {reply_len}"), len)
}

/// The UDP echo server's answer to `request` from `from`: for a [`big_request`], a sized
/// datagram of the length asked for (capped at [`MAX_UDP_PAYLOAD`]) whose first line is
/// `<pod> <client> <request length> <intact|corrupt>`; for anything else the line
/// `<pod> <client>`.
fn udp_answer(pod: &str, from: SocketAddr, request: &[u8]) -> Vec<u8> {
    if request.starts_with(BIG_PREFIX)
        && let Some((line, intact)) = check_sized(request)
        && let Ok(want) = line[BIG_PREFIX.len()..].trim().parse::<usize>()
    {
        let state = if intact { "intact" } else { "corrupt" };
        let first = format!("{pod} {from} {} {state}", request.len());
        return sized_datagram(&first, want.min(MAX_UDP_PAYLOAD));
    }
    format!("{pod} {from}\n").into_bytes()
}

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

/// The wildcard address of a server's family.
fn wildcard(ipv6: bool, port: u16) -> SocketAddr {
    if ipv6 {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))
    } else {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
    }
}

/// A socket bound to `addr`; an IPv6 one is IPv6-only (IPV6_V6ONLY before bind), so it
/// never shares the port with the IPv4 socket.
fn bind(addr: SocketAddr, udp: bool) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (ty, proto) = if udp {
        (Type::DGRAM, Protocol::UDP)
    } else {
        (Type::STREAM, Protocol::TCP)
    };
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if !udp {
        // As std's TcpListener::bind does.
        s.set_reuse_address(true)?;
    }
    s.bind(&addr.into())?;
    if !udp {
        s.listen(128)?;
    }
    Ok(s)
}

/// The running TCP+UDP echo servers of all backend pods.
pub struct EchoServers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    conns: Arc<AtomicUsize>,
}

impl EchoServers {
    /// Start a TCP and a UDP server on 0.0.0.0:`port` and on [::]:`port` in each `(pod name,
    /// netns)`. Returns once every socket is bound, or the first bind error.
    pub fn start(pods: &[(String, String)], port: u16) -> anyhow::Result<EchoServers> {
        let mut servers = EchoServers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            conns: Arc::new(AtomicUsize::new(0)),
        };
        let (tx, rx) = mpsc::channel::<io::Result<()>>();
        let kinds = [(false, false), (true, false), (false, true), (true, true)];
        for (pod, ns) in pods {
            for (udp, ipv6) in kinds {
                let (pod, ns, tx) = (pod.clone(), ns.clone(), tx.clone());
                let stop = servers.stop.clone();
                let conns = servers.conns.clone();
                let name = format!(
                    "echo-{}{}-{pod}",
                    if udp { "udp" } else { "tcp" },
                    if ipv6 { "6" } else { "" }
                );
                let h = std::thread::Builder::new().name(name).spawn(move || {
                    if let Err(e) = netns::enter_netns(&ns) {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    let addr = wildcard(ipv6, port);
                    if udp {
                        udp_server(&pod, addr, &stop, tx)
                    } else {
                        tcp_server(&pod, addr, &stop, &conns, tx)
                    }
                })?;
                servers.threads.push(h);
            }
        }
        drop(tx);
        for _ in 0..pods.len() * kinds.len() {
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

fn udp_server(pod: &str, addr: SocketAddr, stop: &AtomicBool, ready: mpsc::Sender<io::Result<()>>) {
    let sock = match bind(addr, true)
        .map(UdpSocket::from)
        .and_then(|s| s.set_read_timeout(Some(POLL)).map(|_| s))
    {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(
                e.kind(),
                format!("{pod} udp bind {addr}: {e}"),
            )));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    // Room for the largest datagram: anything longer would be cut and look corrupt.
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD + 1];
    while !stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                let reply = udp_answer(pod, from, &buf[..n]);
                let _ = sock.send_to(&reply, from);
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            // e.g. ICMP errors surfacing as ECONNREFUSED: keep serving.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn tcp_server(
    pod: &str,
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    conns: &Arc<AtomicUsize>,
    ready: mpsc::Sender<io::Result<()>>,
) {
    // Nonblocking accept so the loop can notice the shutdown flag.
    let listener = match bind(addr, false)
        .map(TcpListener::from)
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
    {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(
                e.kind(),
                format!("{pod} tcp bind {addr}: {e}"),
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
                        let _ = serve_conn(&pod, stream, peer, &stop);
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
fn serve_conn(pod: &str, mut s: TcpStream, peer: SocketAddr, stop: &AtomicBool) -> io::Result<()> {
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
    peer: SocketAddr,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_answers_have_the_asked_length_and_report_the_request() {
        let from: SocketAddr = "10.244.1.20:40000".parse().unwrap();
        let req = big_request(16_384, 60_000);
        assert_eq!(req.len(), 16_384);
        let answer = udp_answer("p1", from, &req);
        assert_eq!(answer.len(), 60_000);
        let (line, intact) = check_sized(&answer).unwrap();
        assert!(intact);
        assert_eq!(line, "p1 10.244.1.20:40000 16384 intact");
        let reply = EchoReply::parse(line).unwrap();
        assert_eq!(reply.rest, "16384 intact");
        // A byte out of place is seen.
        let mut bad = req.clone();
        bad[9000] ^= 1;
        let answer = udp_answer("p1", from, &bad);
        let (line, _) = check_sized(&answer).unwrap();
        assert!(line.ends_with("corrupt"), "{line}");
        // Capped at the largest UDP payload; plain requests get the plain line.
        assert_eq!(
            udp_answer("p1", from, &big_request(20, 100_000)).len(),
            MAX_UDP_PAYLOAD
        );
        assert_eq!(udp_answer("p1", from, b"ping\n"), b"p1 10.244.1.20:40000\n");
        // An IPv6 client is written in brackets.
        let from6: SocketAddr = "[fd00:10:244:1::20]:40000".parse().unwrap();
        assert_eq!(
            udp_answer("p1", from6, b"ping\n"),
            b"p1 [fd00:10:244:1::20]:40000\n"
        );
    }
}
