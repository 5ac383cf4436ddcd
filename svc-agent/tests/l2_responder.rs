//! The L2 announcer's ARP responder with real packets: two network namespaces joined by a
//! veth pair, a "lan" host (192.0.2.100/24) and a "node" (192.0.2.1/24) whose device the
//! responder serves. Needs root.
//!
//! Every test creates its own namespaces (`svl-<pid>-<random>-arp*`), removed by a Drop
//! guard also on failure; nothing is put in the root namespace; every wait is bounded.
//! The lan host resolves addresses by sending a UDP datagram to them from a thread that
//! entered its namespace (the machine has no `ping` nor `arping`): the datagram makes the
//! kernel send ARP requests, and `ip -n LAN neigh show` tells what it learnt.
//!
//! Found on Linux 6.18 with the defaults of a new namespace (`arp_accept=0`): the
//! gratuitous ARP updates an existing neighbour entry of the lan host (a stale entry with
//! another MAC gets the node's), and does not create an entry for an address the host had
//! none for. Both are asserted in `answers_only_its_set_and_announces_with_gratuitous_arp`.
//!
//! Run: `AYA_BUILD_SKIP=1 cargo test -p svc-agent --test l2_responder -- --test-threads=1`
use std::collections::BTreeSet;
use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use svc_agent::l2::{DeviceError, L2Error, Responder};

const LAN_MAC: &str = "02:00:00:00:02:02";
const NODE_MAC: &str = "02:00:00:00:01:01";
const LAN_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
const VIP2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 201);
const OTHER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 202);
const NEW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 203);

/// A fresh, unique namespace name ending in `tag`.
fn unique(tag: &str) -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("svl-{}-{:08x}-{tag}", std::process::id(), h.finish() as u32)
}

/// `ip ARGS`, panicking with its stderr on failure; stdout returned.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawn ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace, deleted on drop (which also destroys its veths).
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = unique(tag);
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn name(&self) -> &str {
        &self.0
    }

    /// `ip -n NS ARGS`.
    fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["-n", self.name()];
        v.extend_from_slice(args);
        ip(&v)
    }

    /// Run `f` on a scoped thread that entered this namespace; the caller's thread stays
    /// where it is.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(self.name());
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Move the calling thread into namespace `ns` (the network namespace is per thread).
fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).unwrap_or_else(|e| panic!("open {ns}: {e}"));
    // SAFETY: plain syscall on a valid fd.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// The lan host and the node, joined by lan0 <-> node0.
struct Lan {
    lan: Netns,
    node: Netns,
}

impl Lan {
    fn new() -> Lan {
        let lan = Netns::new("arpL");
        let node = Netns::new("arpN");
        let net = Lan { lan, node };
        net.link(NODE_MAC);
        net
    }

    /// The veth pair lan0 (lan host) <-> node0 (node, with `node_mac`), addressed and up.
    fn link(&self, node_mac: &str) {
        self.lan.ip(&[
            "link",
            "add",
            "lan0",
            "address",
            LAN_MAC,
            "type",
            "veth",
            "peer",
            "name",
            "node0",
            "address",
            node_mac,
            "netns",
            self.node.name(),
        ]);
        self.lan
            .ip(&["addr", "add", "192.0.2.100/24", "dev", "lan0"]);
        self.node
            .ip(&["addr", "add", "192.0.2.1/24", "dev", "node0"]);
        self.lan.ip(&["link", "set", "lan0", "up"]);
        self.node.ip(&["link", "set", "node0", "up"]);
        // Unanswered resolutions fail after 3 probes 100 ms apart instead of 1 s apart.
        self.lan.run(|| {
            std::fs::write("/proc/sys/net/ipv4/neigh/lan0/retrans_time_ms", "100")
                .expect("retrans_time_ms")
        });
    }

    /// Make the lan host resolve `ip`: send it a datagram.
    fn poke(&self, ip: Ipv4Addr) {
        self.lan.run(|| {
            let s = UdpSocket::bind((LAN_IP, 0)).expect("bind in lan");
            // The first send queues the datagram behind the ARP resolution; an error (a
            // FAILED entry's EHOSTUNREACH) is fine: the entry is what is checked.
            let _ = s.send_to(b"who has it?", (ip, 9));
        });
    }

    /// The lan host's neighbour entry for `ip`: (lladdr, state), if any.
    fn neigh(&self, ip: Ipv4Addr) -> Option<(Option<String>, String)> {
        let out = self
            .lan
            .ip(&["neigh", "show", &ip.to_string(), "dev", "lan0"]);
        let line = out.lines().find(|l| !l.trim().is_empty())?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let lladdr = words
            .iter()
            .position(|w| *w == "lladdr")
            .and_then(|i| words.get(i + 1))
            .map(|s| s.to_string());
        Some((lladdr, words.last().unwrap_or(&"").to_string()))
    }

    /// Wait (at most 3 s) until the lan host has `ip` at `mac`, in a usable state.
    fn expect_resolved(&self, ip: Ipv4Addr, mac: &str) {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.neigh(ip);
            if let Some((Some(l), state)) = &last
                && l == mac
                && ["REACHABLE", "STALE", "DELAY", "PROBE"].contains(&state.as_str())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{ip} not resolved to {mac} within 3 s; last entry: {last:?}");
    }

    /// Wait (at most 3 s) for the lan host's resolution of `ip` to fail, checking it never
    /// learns an address for it.
    fn expect_unanswered(&self, ip: Ipv4Addr) {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.neigh(ip);
            match &last {
                Some((Some(l), state)) => panic!("{ip} was answered: {l} {state}"),
                Some((None, state)) if state == "FAILED" => return,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // No answer within the bound; INCOMPLETE (or no entry) is accepted too.
        assert!(
            matches!(&last, None | Some((None, _))),
            "{ip}: last entry {last:?}"
        );
    }

    fn names(&self) -> Vec<String> {
        vec![self.lan.name().to_string(), self.node.name().to_string()]
    }

    fn flush(&self) {
        self.lan.ip(&["neigh", "flush", "dev", "lan0"]);
    }
}

#[derive(Debug)]
struct Stats {
    replies: u64,
    gratuitous: u64,
    errors: Vec<DeviceError>,
}

enum Cmd {
    Set(BTreeSet<Ipv4Addr>, mpsc::Sender<()>),
    Stats(mpsc::Sender<Stats>),
}

/// A Responder on its own thread, which entered the node namespace and runs a
/// current-thread runtime. Dropping it drops the Responder and the runtime, then joins.
struct NodeResponder {
    cmds: Option<tokio::sync::mpsc::UnboundedSender<Cmd>>,
    thread: Option<JoinHandle<()>>,
}

impl NodeResponder {
    fn start(ns: &str, devices: &[&str]) -> Result<NodeResponder, String> {
        let ns = ns.to_string();
        let devices: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel::<Cmd>();
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let r = match Responder::start(&devices) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                while let Some(cmd) = cmd_rx.recv().await {
                    match cmd {
                        Cmd::Set(ips, done) => {
                            r.set_addresses(ips.clone());
                            assert_eq!(r.addresses(), ips);
                            let _ = done.send(());
                        }
                        Cmd::Stats(tx) => {
                            let _ = tx.send(Stats {
                                replies: r.replies_sent(),
                                gratuitous: r.gratuitous_sent(),
                                errors: r.device_errors(),
                            });
                        }
                    }
                }
            });
        });
        let mut nr = NodeResponder {
            cmds: Some(cmd_tx),
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(nr),
            Ok(Err(e)) => Err(e),
            Err(e) => {
                nr.cmds = None;
                Err(format!("responder thread did not start: {e}"))
            }
        }
    }

    fn set(&self, ips: &[Ipv4Addr]) {
        let (tx, rx) = mpsc::channel();
        self.cmds
            .as_ref()
            .expect("running")
            .send(Cmd::Set(ips.iter().copied().collect(), tx))
            .expect("responder thread alive");
        rx.recv_timeout(Duration::from_secs(5))
            .expect("set_addresses acknowledged");
    }

    /// Wait (at most 6 s) until exactly `n` gratuitous frames were sent, then a little
    /// more: they are counted as sent, and must have reached the lan host.
    fn wait_gratuitous(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(6);
        loop {
            let s = self.stats();
            assert!(s.gratuitous <= n, "more gratuitous frames than {n}: {s:?}");
            if s.gratuitous == n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{n} gratuitous frames not sent: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    fn stats(&self) -> Stats {
        let (tx, rx) = mpsc::channel();
        self.cmds
            .as_ref()
            .expect("running")
            .send(Cmd::Stats(tx))
            .expect("responder thread alive");
        rx.recv_timeout(Duration::from_secs(5)).expect("stats")
    }
}

impl Drop for NodeResponder {
    fn drop(&mut self) {
        self.cmds = None;
        if let Some(t) = self.thread.take() {
            let r = t.join();
            if r.is_err() && !std::thread::panicking() {
                panic!("responder thread panicked");
            }
        }
    }
}

/// The namespaces `names` are gone (their guards ran).
fn gone(names: &[String]) {
    for n in names {
        assert!(
            !std::path::Path::new(&format!("/run/netns/{n}")).exists(),
            "namespace {n} left behind"
        );
    }
}

#[test]
fn answers_only_its_set_and_announces_with_gratuitous_arp() {
    let names;
    {
        let net = Lan::new();
        names = net.names();
        let arp_accept = net.lan.run(|| {
            std::fs::read_to_string("/proc/sys/net/ipv4/conf/lan0/arp_accept").expect("read")
        });
        assert_eq!(arp_accept.trim(), "0", "the lan host's default arp_accept");

        let r = NodeResponder::start(net.node.name(), &["node0"]).expect("start");
        r.set(&[VIP]);

        // Gratuitous ARP does not create an entry with arp_accept=0: after the 3 rounds
        // of 2 frames (400 ms), the lan host still has nothing for VIP.
        r.wait_gratuitous(6);
        assert_eq!(net.neigh(VIP), None, "gratuitous ARP created an entry");

        // (a) the announced address is answered with the node's MAC.
        net.poke(VIP);
        net.expect_resolved(VIP, NODE_MAC);
        let answered = r.stats().replies;
        assert!(answered >= 1, "replies_sent {answered}");

        // (b) an address outside the set is not answered (the node's kernel does not
        // answer for addresses it does not hold either).
        net.poke(OTHER);
        net.expect_unanswered(OTHER);
        assert_eq!(r.stats().replies, answered, "replied for {OTHER}");

        // (c) removed: no more answers.
        r.set(&[]);
        net.flush();
        net.poke(VIP);
        net.expect_unanswered(VIP);

        // (d) gratuitous ARP updates an existing (stale, wrong) entry within 2 s, and
        // creates none for an address the lan host had no entry for.
        net.lan.ip(&[
            "neigh",
            "replace",
            &VIP2.to_string(),
            "dev",
            "lan0",
            "lladdr",
            "02:00:00:00:00:99",
            "nud",
            "stale",
        ]);
        assert_eq!(
            net.neigh(VIP2),
            Some((Some("02:00:00:00:00:99".into()), "STALE".into()))
        );
        let before = r.stats().gratuitous;
        r.set(&[VIP2, NEW]);
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some((Some(l), _)) = net.neigh(VIP2)
                && l == NODE_MAC
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the lan entry of {VIP2} not updated within 2 s: {:?}",
                net.neigh(VIP2)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // 2 addresses x 3 rounds x 2 frames.
        r.wait_gratuitous(before + 12);
        assert_eq!(net.neigh(NEW), None, "gratuitous ARP created an entry");
        let s = r.stats();
        assert_eq!(
            s.gratuitous - before,
            12,
            "2 addresses x 3 rounds x 2: {s:?}"
        );
        assert!(s.errors.is_empty(), "{s:?}");

        // The answers stop with the responder.
        drop(r);
        net.flush();
        net.poke(VIP2);
        net.expect_unanswered(VIP2);
    }
    gone(&names);
}

#[test]
fn follows_a_mac_change_and_a_recreated_device() {
    let names;
    {
        let net = Lan::new();
        names = net.names();
        let r = NodeResponder::start(net.node.name(), &["node0"]).expect("start");
        r.set(&[VIP]);
        // Let the gratuitous rounds end first: they too would update the lan host's
        // INCOMPLETE entry, and what is checked here are the replies.
        r.wait_gratuitous(6);
        net.poke(VIP);
        net.expect_resolved(VIP, NODE_MAC);
        let replies = r.stats().replies;
        assert!(replies >= 1);

        // A new MAC is used from the next reply on.
        let new_mac = "02:00:00:00:01:02";
        net.node.ip(&["link", "set", "node0", "address", new_mac]);
        net.flush();
        net.poke(VIP);
        net.expect_resolved(VIP, new_mac);
        let replies2 = r.stats().replies;
        assert!(replies2 > replies);

        // The device deleted and re-created (a new ifindex): the task records the error,
        // re-opens it by name and answers again.
        net.lan.ip(&["link", "del", "lan0"]);
        let recreated = "02:00:00:00:01:03";
        net.link(recreated);
        // Re-opening backs off 250 ms, 500 ms, ...; once open, the task announces the set
        // again (3 more rounds): wait for them (at most 6 s), then check a reply.
        r.wait_gratuitous(12);
        net.flush();
        net.poke(VIP);
        net.expect_resolved(VIP, recreated);
        let s = r.stats();
        assert!(s.replies > replies2, "{s:?}");
        assert_eq!(s.gratuitous, 12, "{s:?}");
        assert_eq!(s.errors.len(), 1, "{s:?}");
        assert_eq!(s.errors[0].device, "node0");
        assert!(s.errors[0].message.contains("recvfrom"), "{s:?}");
    }
    gone(&names);
}

#[test]
fn start_names_a_missing_or_down_device() {
    let names;
    {
        let ns = Netns::new("arpE");
        names = vec![ns.name().to_string()];
        ns.ip(&[
            "link", "add", "down0", "type", "veth", "peer", "name", "down1",
        ]);
        let errors: Vec<L2Error> = ns.run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                ["nope0", "down0"]
                    .iter()
                    .map(|d| Responder::start(&[d.to_string()]).err().expect("an error"))
                    .collect()
            })
        });
        assert!(
            matches!(&errors[0], L2Error::NoSuchDevice { device } if device == "nope0"),
            "{:?}",
            errors[0]
        );
        assert!(errors[0].to_string().contains("\"nope0\""), "{}", errors[0]);
        assert!(
            matches!(&errors[1], L2Error::DeviceDown { device } if device == "down0"),
            "{:?}",
            errors[1]
        );
        assert!(errors[1].to_string().contains("\"down0\""), "{}", errors[1]);

        // Also through the test's responder thread, and outside a runtime.
        let e = NodeResponder::start(ns.name(), &["nope0"])
            .err()
            .expect("an error");
        assert!(e.contains("nope0"), "{e}");
        assert!(matches!(
            Responder::start(&["lo".to_string()]),
            Err(L2Error::NoRuntime)
        ));
    }
    gone(&names);
}
