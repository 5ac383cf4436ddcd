//! End to end: ICMP errors about translated flows reach the socket that sent the offending
//! packet (svc-ebpf/src/icmp.rs), on the two-node lab with an agent on each node.
//!
//! A router between a node and a backend: node 2 forwards node 1's translated packets to
//! its pod b1 through a link of MTU 1280 (the node's end of b1's veth; b1 itself still
//! announces an MSS of 1460), so a full-sized segment with DF set gets a real
//! "fragmentation needed" from node 2, quoting the packet as node 1 translated it. Node 1
//! translates the error back. The rows:
//! - a pod (ca) uploads 256 KiB through a ClusterIP: its socket's path MTU drops to 1280 and
//!   the upload completes (untranslated, the error quotes b1:9000, which no socket of ca's
//!   knows: the transfer stalls, a PMTU blackhole);
//! - the same over IPv6 (the Service's IPv6 ClusterIP, b1's IPv6 address): node 2's
//!   ICMPv6 "packet too big" is translated back by node 1 (svc-ebpf/src/icmp6.rs), and the
//!   upload completes with a path MTU of 1280;
//! - an outside host uploads through node 1's NodePort (masqueraded to node 1's address):
//!   the error comes to node 1, which sends it on to the outside host;
//! - the other direction: a pod on node 1 (a1, behind a node-side link of MTU 1280)
//!   downloads 256 KiB through node 2's NodePort from b2: node 1 (now the router) sends
//!   "fragmentation needed" about b2's reply to node 2's address, node 2 translates it to
//!   b2, whose socket's path MTU drops to 1280 and the download completes;
//! - UDP to a ClusterIP port whose pod has no listener: b1's port unreachable reaches the
//!   client's connected socket as ECONNREFUSED;
//! - UDP with TTL 2 to a ClusterIP: node 2's time exceeded reaches the client's error queue
//!   (IP_RECVERR), from the Service address, quoting the Service address (as netfilter
//!   translates it: a traceroute through a Service shows the Service for the hops behind it).
//!
//! Errors the node generates itself (a node-side link of a lower MTU toward a pod of the
//! same node) are not covered: they leave through egress, where no program runs (README).
//! kube-proxy's proxier tests (runPacketFlowTests) trace rule chains only; netfilter
//! translates RELATED errors by itself, so they have no case to port here.
use std::{
    io::{self, BufRead, BufReader, Read, Write},
    mem::size_of,
    net::{
        IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream,
        UdpSocket,
    },
    os::fd::AsRawFd,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use svc_common::{PROTO_TCP, PROTO_UDP, Verdict};
use svc_lab::{EXT_IP, Lab, NODE_EXT_IP, NODE2_EXT_IP, agent::LabAgent, in_netns, netns};

static SERIAL: Mutex<()> = Mutex::new(());

/// ClusterIP of `upload` (backend b1 on node 2): TCP 80 -> the bulk server, UDP 80 -> a
/// port nobody listens on, UDP 81 -> the echo server.
const UPLOAD_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 3, 10);
const UPLOAD_NODE_PORT: u16 = 30900;
/// `upload`'s IPv6 ClusterIP (backend b1's IPv6 address, TCP only).
const UPLOAD_VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0x3, 0x10);
/// ClusterIP of `download` (backend b2 on node 2).
const DOWNLOAD_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 3, 11);
const DOWNLOAD_NODE_PORT: u16 = 30902;
const BULK_PORT: u16 = 9000;
const MTU: u32 = 1280;
const BYTES: usize = 256 * 1024;
/// How long a transfer may stall before it counts as blackholed.
const STALL: Duration = Duration::from_secs(10);

fn manifest_yaml() -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: upload, namespace: default}}
spec:
  type: NodePort
  ipFamilyPolicy: PreferDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIP: {UPLOAD_VIP}
  clusterIPs: ["{UPLOAD_VIP}", "{UPLOAD_VIP6}"]
  ports:
    - {{name: bulk, protocol: TCP, port: 80, targetPort: {BULK_PORT}, nodePort: {UPLOAD_NODE_PORT}}}
    - {{name: closed, protocol: UDP, port: 80, targetPort: 9999, nodePort: {UPLOAD_NODE_PORT}}}
    - {{name: echo, protocol: UDP, port: 81, targetPort: 8080, nodePort: 30901}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: upload-1
  namespace: default
  labels: {{kubernetes.io/service-name: upload}}
addressType: IPv4
ports:
  - {{name: bulk, protocol: TCP, port: {BULK_PORT}}}
  - {{name: closed, protocol: UDP, port: 9999}}
  - {{name: echo, protocol: UDP, port: 8080}}
endpoints:
  - {{addresses: ["10.244.2.11"], conditions: {{ready: true}}, nodeName: node2}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: upload-6
  namespace: default
  labels: {{kubernetes.io/service-name: upload}}
addressType: IPv6
ports:
  - {{name: bulk, protocol: TCP, port: {BULK_PORT}}}
endpoints:
  - {{addresses: ["fd00:10:244:2::11"], conditions: {{ready: true}}, nodeName: node2}}
---
apiVersion: v1
kind: Service
metadata: {{name: download, namespace: default}}
spec:
  type: NodePort
  clusterIP: {DOWNLOAD_VIP}
  ports:
    - {{name: bulk, protocol: TCP, port: 80, targetPort: {BULK_PORT}, nodePort: {DOWNLOAD_NODE_PORT}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: download-1
  namespace: default
  labels: {{kubernetes.io/service-name: download}}
addressType: IPv4
ports:
  - {{name: bulk, protocol: TCP, port: {BULK_PORT}}}
endpoints:
  - {{addresses: ["10.244.2.12"], conditions: {{ready: true}}, nodeName: node2}}
"#
    )
}

/// A TCP server in a pod for bulk transfers, one connection at a time: `up N\n` then N
/// bytes is answered `got N\n`; `down N\n` is answered with N bytes, after which the
/// server records its socket's path MTU (IP_MTU) and closes. Every read and write is
/// bounded by [`STALL`]; stopped and joined on drop.
struct BulkServer {
    stop: Arc<AtomicBool>,
    /// The path MTU of each finished download's socket, in order.
    mtus: Arc<Mutex<Vec<u32>>>,
    thread: Option<JoinHandle<()>>,
}

impl BulkServer {
    fn start(ns: &str) -> BulkServer {
        Self::start_on(ns, SocketAddr::from((Ipv4Addr::UNSPECIFIED, BULK_PORT)))
    }

    /// On `addr` (0.0.0.0 or [::], an IPv6-only socket since the IPv4 one has the port).
    fn start_on(ns: &str, addr: SocketAddr) -> BulkServer {
        let stop = Arc::new(AtomicBool::new(false));
        let mtus = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (ns, s, m) = (ns.to_string(), stop.clone(), mtus.clone());
        let thread = std::thread::spawn(move || {
            let listener = netns::enter_netns(&ns)
                .and_then(|()| bind_only(addr))
                .and_then(|l| l.set_nonblocking(true).map(|()| l));
            let listener = match listener {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        if let Err(e) = serve(conn, &m) {
                            eprintln!("bulk server in {ns}: {e}");
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("bulk server reports")
            .expect("bulk server listens");
        BulkServer {
            stop,
            mtus,
            thread: Some(thread),
        }
    }

    fn last_mtu(&self) -> Option<u32> {
        self.mtus.lock().unwrap().last().copied()
    }
}

impl Drop for BulkServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, mtus: &Mutex<Vec<u32>>) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(STALL))?;
    conn.set_write_timeout(Some(STALL))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let (verb, n) = (words.next(), words.next().and_then(|n| n.parse().ok()));
    let mut conn = conn;
    match (verb, n) {
        (Some("up"), Some(n)) if n <= 16 << 20 => {
            let mut left: usize = n;
            let mut buf = [0u8; 16384];
            while left > 0 {
                let got = reader.read(&mut buf[..left.min(16384)])?;
                if got == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                left -= got;
            }
            conn.write_all(format!("got {n}\n").as_bytes())?;
        }
        (Some("down"), Some(n)) if n <= 16 << 20 => {
            let chunk = [0x5au8; 16384];
            let mut left: usize = n;
            while left > 0 {
                let k = left.min(chunk.len());
                conn.write_all(&chunk[..k])?;
                left -= k;
            }
            mtus.lock().unwrap().push(ip_mtu(&conn)?);
            conn.shutdown(Shutdown::Write)?;
            // Wait (bounded) for the client to close, so the close is not a RST.
            let _ = reader.read(&mut [0u8; 16]);
        }
        _ => conn.write_all(b"?\n")?,
    }
    Ok(())
}

/// A listener on `addr`; an IPv6 one takes IPv6 only, beside an IPv4 one on the port.
fn bind_only(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(16)?;
    Ok(socket.into())
}

/// The socket's path MTU (IP_MTU, or IPV6_MTU on an IPv6 socket; it must be connected).
fn ip_mtu(s: &(impl AsRawFd + PeerAddr)) -> io::Result<u32> {
    let mut mtu: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    let (level, name) = if s.peer()?.is_ipv6() {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    } else {
        (libc::IPPROTO_IP, libc::IP_MTU)
    };
    // SAFETY: getsockopt writes at most `len` bytes into `mtu`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(mtu as u32)
}

/// The peer of a connected socket, to tell its family.
trait PeerAddr {
    fn peer(&self) -> io::Result<SocketAddr>;
}

impl PeerAddr for TcpStream {
    fn peer(&self) -> io::Result<SocketAddr> {
        self.peer_addr()
    }
}

fn connect(ns: &str, to: impl Into<SocketAddr>) -> Result<TcpStream, String> {
    let to: SocketAddr = to.into();
    let s = in_netns(ns, || {
        TcpStream::connect_timeout(&to, Duration::from_secs(3))
    })
    .map_err(|e| format!("connect {to}: {e}"))?;
    s.set_read_timeout(Some(STALL)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(STALL))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// Uploads [`BYTES`] from `ns` to `to`; the client socket's path MTU afterwards.
fn upload(ns: &str, to: impl Into<SocketAddr>) -> Result<u32, String> {
    let mut s = connect(ns, to)?;
    let before = ip_mtu(&s).map_err(|e| e.to_string())?;
    s.write_all(format!("up {BYTES}\n").as_bytes())
        .and_then(|()| s.write_all(&vec![0xa5; BYTES]))
        .map_err(|e| format!("sending {BYTES} bytes (path MTU {before}): {e}"))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| format!("no answer within {STALL:?} after sending {BYTES} bytes, path MTU {}: {e} (stalled: the segments are blackholed)", ip_mtu(&s).unwrap_or(0)))?;
    if line.trim() != format!("got {BYTES}") {
        return Err(format!("answer {line:?}"));
    }
    ip_mtu(&s).map_err(|e| e.to_string())
}

/// Downloads [`BYTES`] from `to` into `ns`.
fn download(ns: &str, to: SocketAddrV4) -> Result<(), String> {
    let mut s = connect(ns, to)?;
    s.write_all(format!("down {BYTES}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut got = 0;
    let mut buf = vec![0u8; 65536];
    while got < BYTES {
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("closed after {got} of {BYTES} bytes")),
            Ok(n) => got += n,
            Err(e) => {
                return Err(format!(
                    "{got} of {BYTES} bytes, then nothing within {STALL:?}: {e} (stalled: the segments are blackholed)"
                ));
            }
        }
    }
    Ok(())
}

/// A connected UDP socket in `ns`.
fn udp_to(ns: &str, to: SocketAddrV4) -> UdpSocket {
    let s = in_netns(ns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))).expect("UDP socket");
    s.connect(to).expect("UDP connect");
    s
}

/// The first ICMP error in `s`'s error queue (IP_RECVERR) within `timeout`: (type, code,
/// offender = the error's source, the quoted packet's destination).
fn icmp_error_of(s: &UdpSocket, timeout: Duration) -> Option<(u8, u8, Ipv4Addr, SocketAddrV4)> {
    let deadline = Instant::now() + timeout;
    let sockaddr = |sin: &libc::sockaddr_in| {
        SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
            u16::from_be(sin.sin_port),
        )
    };
    while Instant::now() < deadline {
        let mut data = [0u8; 512];
        let mut control = [0u8; 512];
        // SAFETY: zeroed plain C structs.
        let mut name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut name as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len();
        // SAFETY: every pointer in msg points at a live buffer of the stated length.
        let n = unsafe {
            libc::recvmsg(
                s.as_raw_fd(),
                &mut msg,
                libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        // SAFETY: walking the control messages recvmsg wrote, with the libc macros.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_RECVERR {
                    let ee = libc::CMSG_DATA(c) as *const libc::sock_extended_err;
                    let err = std::ptr::read_unaligned(ee);
                    let offender = std::ptr::read_unaligned(
                        libc::SO_EE_OFFENDER(ee) as *const libc::sockaddr_in
                    );
                    if err.ee_origin == libc::SO_EE_ORIGIN_ICMP {
                        return Some((
                            err.ee_type,
                            err.ee_code,
                            *sockaddr(&offender).ip(),
                            sockaddr(&name),
                        ));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
    }
    None
}

struct Env {
    agents: Vec<LabAgent>,
    manifests: PathBuf,
    _bulk_b1: BulkServer,
    _bulk_b1_6: BulkServer,
    bulk_b2: BulkServer,
    // Dropped last: tears the namespaces down after the agents and servers are stopped.
    lab: Lab,
}

impl Env {
    fn up() -> Env {
        let mut lab = Lab::up_two_nodes().expect("two-node lab");
        let manifests = std::env::temp_dir().join(format!("svl-{}-manifests", lab.id()));
        std::fs::create_dir_all(&manifests).unwrap();
        std::fs::write(manifests.join("icmp.yaml"), manifest_yaml()).unwrap();
        // Node 2 is the router in front of b1; node 1 the router in front of a1.
        lab.set_pod_link_mtu("b1", MTU).expect("b1's link");
        lab.set_pod_link_mtu("a1", MTU).expect("a1's link");
        let bulk_b1 = BulkServer::start(lab.pod_ns("b1"));
        let bulk_b1_6 = BulkServer::start_on(
            lab.pod_ns("b1"),
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, BULK_PORT)),
        );
        let bulk_b2 = BulkServer::start(lab.pod_ns("b2"));
        let mut agents = Vec::new();
        for n in [1, 2] {
            let log = std::env::temp_dir().join(format!("svl-{}-agent{n}.log", lab.id()));
            let name = lab.node(n).name.clone();
            let agent = LabAgent::start_in(&mut lab, n, &manifests, &log, &["--node-name", &name])
                .expect("start agent");
            agents.push(agent);
        }
        for agent in &agents {
            for (vip, proto) in [
                (IpAddr::V4(UPLOAD_VIP), PROTO_TCP),
                (IpAddr::V4(UPLOAD_VIP), PROTO_UDP),
                (IpAddr::V4(DOWNLOAD_VIP), PROTO_TCP),
                (IpAddr::V6(UPLOAD_VIP6), PROTO_TCP),
            ] {
                agent
                    .wait_backends(vip, 80, proto, 1, Duration::from_secs(20))
                    .expect("agent synced");
            }
        }
        Env {
            agents,
            manifests,
            _bulk_b1: bulk_b1,
            _bulk_b1_6: bulk_b1_6,
            bulk_b2,
            lab,
        }
    }

    /// Node `n`'s count of `v`, summed over CPUs.
    fn count(&self, n: usize, v: Verdict) -> u64 {
        self.agents[n - 1].verdict_count(v)
    }

    /// Runs `f`; its result, and what node `n` counted as `v` meanwhile.
    fn counting<T>(&self, n: usize, v: Verdict, f: impl FnOnce() -> T) -> (T, u64) {
        let before = self.count(n, v);
        let r = f();
        (r, self.count(n, v) - before)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for a in &self.agents {
                eprintln!("--- agent on node{} ---\n{}", a.node, a.log_text());
            }
        }
        for a in &self.agents {
            let _ = a.process.stop();
            let _ = std::fs::remove_file(&a.log);
        }
        let _ = std::fs::remove_dir_all(&self.manifests);
    }
}

#[test]
fn icmp_errors_of_translated_flows_reach_their_sockets() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    let lab = &env.lab;
    let mut failures: Vec<String> = Vec::new();
    let mut row = |name: &str, result: Result<String, String>| match result {
        Ok(what) => println!("ok   {name}: {what}"),
        Err(e) => {
            println!("FAIL {name}: {e}");
            failures.push(format!("{name}: {e}"));
        }
    };

    // 1. Pod -> ClusterIP, frag needed from node 2 about the DNATed segment.
    let vip = SocketAddrV4::new(UPLOAD_VIP, 80);
    let t = Instant::now();
    let (r, n) = env.counting(1, Verdict::RevNatIcmp, || upload(lab.pod_ns("ca"), vip));
    row(
        "pod ca -> ClusterIP 10.96.3.10:80 -> b1 behind a 1280-byte link: 256 KiB upload",
        r.and_then(|mtu| {
            if mtu != MTU {
                return Err(format!("completed, but the path MTU is {mtu}"));
            }
            if n == 0 {
                return Err("completed, but node 1 counted no rev_nat_icmp".into());
            }
            Ok(format!(
                "done in {:?}, path MTU to the Service {mtu}, node 1 translated {n} error(s)",
                t.elapsed()
            ))
        }),
    );

    // 1b. The same over IPv6: packet too big from node 2 about the DNATed segment.
    let vip6 = SocketAddr::new(UPLOAD_VIP6.into(), 80);
    let t = Instant::now();
    let (r, n) = env.counting(1, Verdict::RevNatIcmp, || upload(lab.pod_ns("ca"), vip6));
    row(
        "pod ca -> IPv6 ClusterIP [fd00:10:96::3:10]:80 -> b1 behind a 1280-byte link: 256 KiB upload",
        r.and_then(|mtu| {
            if mtu != MTU {
                return Err(format!("completed, but the path MTU is {mtu}"));
            }
            if n == 0 {
                return Err("completed, but node 1 counted no rev_nat_icmp".into());
            }
            Ok(format!(
                "done in {:?}, path MTU to the Service {mtu}, node 1 translated {n} packet-too-big error(s)",
                t.elapsed()
            ))
        }),
    );

    // 2. Outside -> NodePort of node 1 (masqueraded): the error comes to node 1's address.
    let np1 = SocketAddrV4::new(NODE_EXT_IP, UPLOAD_NODE_PORT);
    let t = Instant::now();
    let (r, n) = env.counting(1, Verdict::RevNatIcmp, || upload(lab.ext_ns(), np1));
    row(
        "outside 192.0.2.100 -> NodePort 192.0.2.1:30900 (masqueraded) -> b1: 256 KiB upload",
        r.and_then(|mtu| {
            if mtu != MTU {
                return Err(format!("completed, but the path MTU is {mtu}"));
            }
            if n == 0 {
                return Err("completed, but node 1 counted no rev_nat_icmp".into());
            }
            Ok(format!(
                "done in {:?}, path MTU to the NodePort {mtu}, node 1 translated {n} error(s) (outside host {EXT_IP})",
                t.elapsed()
            ))
        }),
    );

    // 3. The other direction: node 1 sends frag needed about b2's reply to 192.0.2.2.
    let np2 = SocketAddrV4::new(NODE2_EXT_IP, DOWNLOAD_NODE_PORT);
    let t = Instant::now();
    let (r, n) = env.counting(2, Verdict::DnatIcmp, || download(lab.pod_ns("a1"), np2));
    // The server records its socket's path MTU once its last write returned, which may be
    // after the client has read everything: wait for the record (bounded).
    let mut server_mtu = None;
    for _ in 0..100 {
        server_mtu = env.bulk_b2.last_mtu();
        if server_mtu.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    row(
        "pod a1 (behind a 1280-byte link) -> NodePort 192.0.2.2:30902 (masqueraded) -> b2: 256 KiB download",
        r.and_then(|()| {
            if server_mtu != Some(MTU) {
                return Err(format!(
                    "completed, but b2's socket has path MTU {server_mtu:?}"
                ));
            }
            if n == 0 {
                return Err("completed, but node 2 counted no dnat_icmp".into());
            }
            Ok(format!(
                "done in {:?}, b2's path MTU toward 192.0.2.2 {MTU}, node 2 translated {n} error(s)",
                t.elapsed()
            ))
        }),
    );

    // 4. UDP to a port b1 does not listen on: b1's own port unreachable.
    let (r, n) = env.counting(1, Verdict::RevNatIcmp, || {
        let s = udp_to(lab.pod_ns("ca"), vip);
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send(b"anyone?").expect("send");
        s.recv(&mut [0u8; 64])
    });
    row(
        "pod ca -> ClusterIP 10.96.3.10:80/UDP -> b1:9999 (no listener): port unreachable",
        match r {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && n > 0 => Ok(format!(
                "recv: ECONNREFUSED, node 1 translated {n} error(s)"
            )),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                Err("ECONNREFUSED, but node 1 counted no rev_nat_icmp".into())
            }
            other => Err(format!("recv: {other:?}, expected ECONNREFUSED")),
        },
    );

    // 5. UDP with TTL 2: node 1 forwards it with TTL 1, node 2 answers time exceeded.
    let echo = SocketAddrV4::new(UPLOAD_VIP, 81);
    let (r, n) = env.counting(1, Verdict::RevNatIcmp, || {
        let s = udp_to(lab.pod_ns("ca"), echo);
        s.set_ttl(2).unwrap();
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads an int.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_RECVERR,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "IP_RECVERR: {}", io::Error::last_os_error());
        s.send(b"traceroute-ish").expect("send");
        icmp_error_of(&s, Duration::from_secs(3))
    });
    row(
        "pod ca -> ClusterIP 10.96.3.10:81/UDP with TTL 2: time exceeded from node 2",
        match r {
            Some((11, 0, from, quoted)) if from == UPLOAD_VIP && quoted == echo && n > 0 => Ok(
                format!("time exceeded from {from} about a datagram to {quoted}"),
            ),
            Some(e) => Err(format!(
                "got (type, code, from, quoted destination) {e:?}, node 1 counted {n}; expected (11, 0, {UPLOAD_VIP}, {echo})"
            )),
            None => Err("no ICMP error in the socket's error queue within 3 s".into()),
        },
    );

    assert!(
        failures.is_empty(),
        "{} of 5 rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
