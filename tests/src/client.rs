//! Client helpers: talk to echo servers (directly or via a Service VIP) from inside a namespace.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::time::Duration;

use crate::echo::{self, EchoReply};
use crate::netns::try_in_netns;

/// A TCP connection opened inside a namespace. The socket keeps that namespace for its
/// whole life, so it is used from the caller's thread after the namespace thread returns.
pub struct TcpSession {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    timeout: Duration,
}

impl TcpSession {
    /// Connect from namespace `ns` to `to`. A refused connection (RST) is reported as
    /// `io::ErrorKind::ConnectionRefused`, no answer as `TimedOut`.
    pub fn connect(ns: &str, to: SocketAddrV4, timeout: Duration) -> io::Result<TcpSession> {
        let stream = try_in_netns(ns, || {
            TcpStream::connect_timeout(&SocketAddr::V4(to), timeout)
        })??;
        Self::from_stream(stream, timeout)
    }

    /// Like [`connect`](Self::connect) but binds the local address first (e.g. a fixed
    /// source port, to reproduce a 5-tuple).
    pub fn connect_from(
        ns: &str,
        local: SocketAddrV4,
        to: SocketAddrV4,
        timeout: Duration,
    ) -> io::Result<TcpSession> {
        let stream = try_in_netns(ns, || connect_bound(local, to, timeout))??;
        Self::from_stream(stream, timeout)
    }

    fn from_stream(stream: TcpStream, timeout: Duration) -> io::Result<TcpSession> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let _ = stream.set_nodelay(true);
        let writer = stream.try_clone()?;
        Ok(TcpSession {
            reader: BufReader::new(stream),
            writer,
            timeout,
        })
    }

    /// Send one line (a newline is appended) and read the one-line reply.
    pub fn exchange(&mut self, line: &str) -> io::Result<EchoReply> {
        self.writer.write_all(format!("{line}\n").as_bytes())?;
        let reply = self.read_line()?;
        EchoReply::parse(&reply)
    }

    /// Read one raw line (with its newline); EOF is reported as `UnexpectedEof`.
    pub fn read_line(&mut self) -> io::Result<String> {
        let mut s = String::new();
        let n = self.reader.read_line(&mut s)?;
        if n == 0 || !s.ends_with('\n') {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a full reply line",
            ));
        }
        Ok(s)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        as_v4(self.writer.local_addr()?)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        as_v4(self.writer.peer_addr()?)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The underlying stream (e.g. to send raw bytes or shut down one direction).
    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }
}

fn as_v4(a: SocketAddr) -> io::Result<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected IPv6 address",
        )),
    }
}

/// Blocking connect with a bound local address and a timeout, via libc because std cannot
/// bind before connect.
fn connect_bound(
    local: SocketAddrV4,
    to: SocketAddrV4,
    timeout: Duration,
) -> io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket syscalls on an fd we own; it is wrapped in TcpStream (which
    // closes it) right away.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sa = sockaddr(local);
        if libc::bind(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of_val(&sa) as libc::socklen_t,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        // Bound connect timeout: SO_SNDTIMEO limits a blocking connect(2).
        s.set_write_timeout(Some(timeout))?;
        let sa = sockaddr(to);
        if libc::connect(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of_val(&sa) as libc::socklen_t,
        ) != 0
        {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock
            {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
            }
            return Err(e);
        }
        s
    };
    Ok(stream)
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = a.port().to_be();
    sa.sin_addr = libc::in_addr {
        s_addr: u32::from(*a.ip()).to_be(),
    };
    sa
}

/// One-shot TCP exchange from `ns`: connect, send `line`, read one reply line, close.
pub fn tcp_request(
    ns: &str,
    to: SocketAddrV4,
    line: &str,
    timeout: Duration,
) -> io::Result<EchoReply> {
    TcpSession::connect(ns, to, timeout)?.exchange(line)
}

/// A UDP socket bound inside a namespace; reusing it keeps the same source port.
pub struct UdpSession {
    sock: UdpSocket,
}

impl UdpSession {
    /// Bind an ephemeral port on 0.0.0.0 in `ns`.
    pub fn bind(ns: &str) -> io::Result<UdpSession> {
        Self::bind_to(ns, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
    }

    pub fn bind_to(ns: &str, local: SocketAddrV4) -> io::Result<UdpSession> {
        let sock = try_in_netns(ns, || UdpSocket::bind(local))??;
        Ok(UdpSession { sock })
    }

    /// Send one datagram to `to` and wait for one reply from that same address
    /// (datagrams from elsewhere are skipped, bounded by `timeout`).
    pub fn request(&self, to: SocketAddrV4, timeout: Duration) -> io::Result<EchoReply> {
        self.sock.send_to(b"ping\n", to)?;
        let deadline = std::time::Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        let mut stray: Option<SocketAddr> = None;
        for _ in 0..64 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            self.sock.set_read_timeout(Some(left))?;
            let (n, from) = match self.sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            // A reply from another address (e.g. the pod IP when reverse NAT is broken) is
            // not the answer; remember it so the timeout error says what did arrive.
            if from == SocketAddr::V4(to) {
                return EchoReply::parse(&String::from_utf8_lossy(&buf[..n]));
            }
            stray = Some(from);
        }
        let extra = stray
            .map(|s| format!(" (a datagram came from {s} instead)"))
            .unwrap_or_default();
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no UDP reply from {to}{extra}"),
        ))
    }

    /// Sends a datagram of `len` bytes to `to` asking the echo server for `reply_len`
    /// bytes back (`echo::big_request`; above the MTU both go as IPv4 fragments), and waits
    /// for the answer from that same address. The answer must have exactly `reply_len`
    /// bytes with the filler intact, and the server must have received all `len` bytes
    /// intact; its reply line is returned (`rest`: `<len> intact`).
    pub fn request_sized(
        &self,
        to: SocketAddrV4,
        len: usize,
        reply_len: usize,
        timeout: Duration,
    ) -> io::Result<EchoReply> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        self.sock.send_to(&echo::big_request(len, reply_len), to)?;
        let deadline = std::time::Instant::now() + timeout;
        let mut buf = vec![0u8; echo::MAX_UDP_PAYLOAD + 1];
        let mut stray: Option<SocketAddr> = None;
        for _ in 0..64 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            self.sock.set_read_timeout(Some(left))?;
            let (n, from) = match self.sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            if from != SocketAddr::V4(to) {
                stray = Some(from);
                continue;
            }
            let (line, intact) = echo::check_sized(&buf[..n])
                .ok_or_else(|| bad(format!("{n}-byte answer without a first line")))?;
            if n != reply_len || !intact {
                return Err(bad(format!(
                    "answer of {n} bytes (asked for {reply_len}), filler {}: {line:?}",
                    if intact { "intact" } else { "corrupt" }
                )));
            }
            let reply = EchoReply::parse(line)?;
            if reply.rest != format!("{len} intact") {
                return Err(bad(format!(
                    "the server got the {len}-byte request as {:?}",
                    reply.rest
                )));
            }
            return Ok(reply);
        }
        let extra = stray
            .map(|s| format!(" (a datagram came from {s} instead)"))
            .unwrap_or_default();
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no {reply_len}-byte UDP answer from {to}{extra}"),
        ))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        as_v4(self.sock.local_addr()?)
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }
}

/// One-shot UDP exchange from `ns` with a fresh ephemeral source port.
pub fn udp_request(ns: &str, to: SocketAddrV4, timeout: Duration) -> io::Result<EchoReply> {
    UdpSession::bind(ns)?.request(to, timeout)
}

/// `GET path` over HTTP/1.0 to `to` from namespace `ns`: (status code, body).
pub fn http_get(
    ns: &str,
    to: SocketAddrV4,
    path: &str,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    use std::io::Read as _;
    let mut s = try_in_netns(ns, || {
        TcpStream::connect_timeout(&SocketAddr::V4(to), timeout)
    })??;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {to}\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    // Bounded by the server closing the connection (HTTP/1.0) or the read timeout.
    s.take(4 << 20).read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("not HTTP: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// One exchange from `ns`, from the address `bind` of that namespace if given (the port is
/// the kernel's choice): a new TCP connection sending one line, or a datagram from a fresh
/// UDP socket; the echo server's reply.
pub fn request_from(
    ns: &str,
    bind: Option<Ipv4Addr>,
    to: SocketAddrV4,
    udp: bool,
    timeout: Duration,
) -> io::Result<EchoReply> {
    let local = SocketAddrV4::new(bind.unwrap_or(Ipv4Addr::UNSPECIFIED), 0);
    if udp {
        UdpSession::bind_to(ns, local)?.request(to, timeout)
    } else if bind.is_some() {
        TcpSession::connect_from(ns, local, to, timeout)?.exchange("request")
    } else {
        TcpSession::connect(ns, to, timeout)?.exchange("request")
    }
}

/// Whether `to` takes a new flow from `ns` (from `bind` if given): a TCP connect, or for
/// UDP one datagram on a connected socket and its answer, so that an ICMP port unreachable
/// shows. Ok(what answered), else the error that tells the cases apart:
/// `ConnectionRefused` (a RST, an ICMP port unreachable), `TimedOut` / `WouldBlock`
/// (silence), `NetworkUnreachable` / `HostUnreachable` (no route on the way).
pub fn connect_probe(
    ns: &str,
    bind: Option<Ipv4Addr>,
    to: SocketAddrV4,
    udp: bool,
    timeout: Duration,
) -> io::Result<String> {
    let local = SocketAddrV4::new(bind.unwrap_or(Ipv4Addr::UNSPECIFIED), 0);
    if !udp {
        let session = match bind {
            Some(_) => TcpSession::connect_from(ns, local, to, timeout)?,
            None => TcpSession::connect(ns, to, timeout)?,
        };
        return Ok(format!("a connection to {}", session.peer_addr()?));
    }
    try_in_netns(ns, || -> io::Result<String> {
        let sock = UdpSocket::bind(local)?;
        sock.connect(to)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.send(b"probe\n")?;
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
    })?
}

/// One TCP line echo from namespace `ns` to `to`, of either family: the pod that answered
/// and the client address it saw (IPv6 in brackets). Errors as [`TcpSession::connect`].
pub fn echo_tcp(ns: &str, to: SocketAddr, timeout: Duration) -> io::Result<(String, SocketAddr)> {
    let line = try_in_netns(ns, || -> io::Result<String> {
        let mut s = TcpStream::connect_timeout(&to, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"hello\n")?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line)
    })??;
    crate::parse_reply6(&line)
}

/// One UDP datagram from namespace `ns` to `to` on a connected socket, of either family:
/// the pod that answered and the client it saw. A port unreachable (ICMP or ICMPv6) comes
/// back as `ConnectionRefused`.
pub fn echo_udp(ns: &str, to: SocketAddr, timeout: Duration) -> io::Result<(String, SocketAddr)> {
    let reply = try_in_netns(ns, || -> io::Result<String> {
        let any: SocketAddr = if to.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let s = UdpSocket::bind(any)?;
        s.set_read_timeout(Some(timeout))?;
        s.connect(to)?;
        s.send(b"ping\n")?;
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })??;
    crate::parse_reply6(&reply)
}
