//! The responder: one AF_PACKET socket per device, one tokio task per socket.
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::arp::{self, FRAME_LEN, Mac};

/// Gratuitous ARP rounds sent for a newly announced address (each round: both forms).
pub const GRATUITOUS_ROUNDS: u32 = 3;
/// Time between two gratuitous rounds.
pub const GRATUITOUS_INTERVAL: Duration = Duration::from_millis(200);
/// First wait before re-opening a device's socket after an error; doubled up to
/// [`REOPEN_MAX`].
const REOPEN_MIN: Duration = Duration::from_millis(250);
const REOPEN_MAX: Duration = Duration::from_secs(5);
/// Frames read per wake-up before the task yields (a flood cannot starve the runtime).
const READ_BATCH: usize = 64;
/// How often a task checks that its device's name still has the ifindex it is bound to.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// What a task waits for on its socket. ERROR matters: when the device goes down or is
/// deleted, the kernel sets the packet socket's error (ENETDOWN) and wakes it with
/// EPOLLERR alone, which tokio's `readable()` does not report; the next `recvfrom`
/// returns the error.
const READINESS: Interest = Interest::READABLE.add(Interest::ERROR);

/// Why a device cannot be served. Every variant names the device.
#[derive(Debug, thiserror::Error)]
pub enum L2Error {
    #[error("L2 device {device:?} does not exist")]
    NoSuchDevice { device: String },
    #[error("L2 device {device:?} is down")]
    DeviceDown { device: String },
    #[error("L2 device {device:?} is not an Ethernet device (hardware type {hw_type})")]
    NotEthernet { device: String, hw_type: u16 },
    #[error("L2 device name {device:?} is empty, too long or contains NUL")]
    BadName { device: String },
    #[error("L2 device {device:?} is listed twice")]
    Duplicate { device: String },
    #[error("L2 device {device:?}: {syscall}: {source}")]
    Syscall {
        device: String,
        syscall: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the L2 responder must be started inside a tokio runtime")]
    NoRuntime,
}

/// The last error a device's task hit, for metrics and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceError {
    pub device: String,
    /// What failed (`recvfrom`, `sendto`, or the open's error).
    pub message: String,
    /// When, as the time since the responder started.
    pub after: Duration,
}

/// The shared state: the address set (a watch channel, so device tasks see every change),
/// the counters, and the per-device last error.
struct Shared {
    started: Instant,
    replies: AtomicU64,
    gratuitous: AtomicU64,
    errors: Mutex<BTreeMap<String, DeviceError>>,
}

impl Shared {
    fn record(&self, device: &str, message: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        let repeated = errors.get(device).is_some_and(|e| e.message == message);
        if !repeated {
            warn!(device, error = %message, "L2 announcer");
        }
        errors.insert(
            device.to_string(),
            DeviceError {
                device: device.to_string(),
                message,
                after: self.started.elapsed(),
            },
        );
    }
}

/// Answers ARP requests for a set of IPv4 addresses on a set of devices; see the
/// [module documentation](super).
pub struct Responder {
    devices: Vec<String>,
    addresses: watch::Sender<Arc<BTreeSet<Ipv4Addr>>>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Responder {
    /// Open one socket per device and spawn its task on the current tokio runtime.
    ///
    /// Every device must exist, be up and be Ethernet; the first that is not is the error
    /// (nothing is left running). The sockets belong to the network namespace of the
    /// calling thread. The runtime must have its IO and time drivers enabled (tokio panics
    /// otherwise). The set of addresses starts empty: nothing is answered until
    /// [`set_addresses`](Self::set_addresses).
    pub fn start(devices: &[String]) -> Result<Responder, L2Error> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| L2Error::NoRuntime)?;
        let mut seen = BTreeSet::new();
        for d in devices {
            if !seen.insert(d) {
                return Err(L2Error::Duplicate { device: d.clone() });
            }
        }
        let mut sockets = Vec::with_capacity(devices.len());
        for d in devices {
            sockets.push(DeviceSocket::open(d)?.register(d)?);
        }
        let shared = Arc::new(Shared {
            started: Instant::now(),
            replies: AtomicU64::new(0),
            gratuitous: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
        });
        let (tx, _) = watch::channel(Arc::new(BTreeSet::new()));
        let tasks = devices
            .iter()
            .zip(sockets)
            .map(|(d, s)| {
                let task = DeviceTask {
                    device: d.clone(),
                    shared: shared.clone(),
                    addresses: tx.subscribe(),
                    announced: BTreeSet::new(),
                    pending: BTreeMap::new(),
                    next_round: None,
                };
                handle.spawn(task.run(s))
            })
            .collect();
        info!(devices = %devices.join(", "), "L2 announcer: answering ARP");
        Ok(Responder {
            devices: devices.to_vec(),
            addresses: tx,
            shared,
            tasks,
        })
    }

    /// Answer for exactly `ips` from now on (replaces the previous set). Addresses not in
    /// the previous set are announced with gratuitous ARP on every device
    /// ([`GRATUITOUS_ROUNDS`] rounds, [`GRATUITOUS_INTERVAL`] apart; a round is skipped
    /// for an address removed meanwhile). Removed addresses are no longer answered.
    pub fn set_addresses(&self, ips: BTreeSet<Ipv4Addr>) {
        self.addresses.send_if_modified(|cur| {
            if **cur == ips {
                return false;
            }
            *cur = Arc::new(ips);
            true
        });
    }

    /// The set answered for.
    pub fn addresses(&self) -> BTreeSet<Ipv4Addr> {
        (**self.addresses.borrow()).clone()
    }

    /// The devices served, as given to [`start`](Self::start).
    pub fn devices(&self) -> &[String] {
        &self.devices
    }

    /// ARP replies sent, all devices.
    pub fn replies_sent(&self) -> u64 {
        self.shared.replies.load(Ordering::Relaxed)
    }

    /// Gratuitous ARP frames sent, all devices (two per address, device and round).
    pub fn gratuitous_sent(&self) -> u64 {
        self.shared.gratuitous.load(Ordering::Relaxed)
    }

    /// The last error of each device that had one since start (kept after recovery).
    pub fn device_errors(&self) -> Vec<DeviceError> {
        let errors = self.shared.errors.lock().unwrap_or_else(|p| p.into_inner());
        errors.values().cloned().collect()
    }
}

impl Drop for Responder {
    /// Abort the tasks: the runtime drops each task's future, closing its socket, the
    /// next time it runs it (immediately on a multi-thread runtime; on a current-thread
    /// runtime at its next poll). No frame is sent after the abort is observed.
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A socket being opened: not yet registered with tokio.
struct DeviceSocket {
    fd: OwnedFd,
    ifindex: i32,
}

struct Registered {
    fd: AsyncFd<OwnedFd>,
    ifindex: i32,
}

fn syscall_err(device: &str, syscall: &'static str) -> L2Error {
    L2Error::Syscall {
        device: device.to_string(),
        syscall,
        source: io::Error::last_os_error(),
    }
}

/// An `ifreq` naming `device`.
fn ifreq(device: &str) -> Result<libc::ifreq, L2Error> {
    let bytes = device.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(L2Error::BadName {
            device: device.to_string(),
        });
    }
    // SAFETY: ifreq is plain data (a name and a union of plain data); all zero is valid.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

/// `ioctl(fd, req, &mut ifreq)` for `device`: the device lookup happens in the socket's
/// network namespace.
fn ioctl(
    fd: RawFd,
    device: &str,
    req: libc::c_ulong,
    name: &'static str,
) -> Result<libc::ifreq, L2Error> {
    let mut r = ifreq(device)?;
    // SAFETY: the three ioctls used take a `struct ifreq *` the kernel reads and fills.
    let rc = unsafe { libc::ioctl(fd, req as _, &mut r as *mut libc::ifreq) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENODEV) {
            return Err(L2Error::NoSuchDevice {
                device: device.to_string(),
            });
        }
        return Err(L2Error::Syscall {
            device: device.to_string(),
            syscall: name,
            source: e,
        });
    }
    Ok(r)
}

/// The device's current Ethernet address (SIOCGIFHWADDR through `fd`).
fn device_mac(fd: RawFd, device: &str) -> Result<Mac, L2Error> {
    let r = ioctl(fd, device, libc::SIOCGIFHWADDR, "ioctl SIOCGIFHWADDR")?;
    // SAFETY: SIOCGIFHWADDR fills ifru_hwaddr.
    let sa = unsafe { r.ifr_ifru.ifru_hwaddr };
    if sa.sa_family != libc::ARPHRD_ETHER {
        return Err(L2Error::NotEthernet {
            device: device.to_string(),
            hw_type: sa.sa_family,
        });
    }
    let mut m = [0u8; 6];
    for (d, s) in m.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(m)
}

impl DeviceSocket {
    /// Resolve `device` by name, check it is up and Ethernet, and open an AF_PACKET raw
    /// socket bound to it for ARP only.
    fn open(device: &str) -> Result<DeviceSocket, L2Error> {
        // Protocol 0: the socket receives nothing until bind() sets ETH_P_ARP and the
        // device, so no frame of another device is ever queued on it.
        // SAFETY: plain syscall.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(syscall_err(device, "socket(AF_PACKET, SOCK_RAW)"));
        }
        // SAFETY: `raw` is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let r = ioctl(
            fd.as_raw_fd(),
            device,
            libc::SIOCGIFINDEX,
            "ioctl SIOCGIFINDEX",
        )?;
        // SAFETY: SIOCGIFINDEX fills ifru_ifindex.
        let ifindex = unsafe { r.ifr_ifru.ifru_ifindex };
        let r = ioctl(
            fd.as_raw_fd(),
            device,
            libc::SIOCGIFFLAGS,
            "ioctl SIOCGIFFLAGS",
        )?;
        // SAFETY: SIOCGIFFLAGS fills ifru_flags.
        let flags = unsafe { r.ifr_ifru.ifru_flags } as libc::c_int;
        if flags & libc::IFF_UP == 0 {
            return Err(L2Error::DeviceDown {
                device: device.to_string(),
            });
        }
        device_mac(fd.as_raw_fd(), device)?;
        let sll = sockaddr_ll(ifindex, None);
        // SAFETY: `sll` is a valid sockaddr_ll of the length passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(syscall_err(device, "bind(AF_PACKET)"));
        }
        // Our own replies and the kernel's ARP requests would come back as
        // PACKET_OUTGOING; skip them in the kernel (Linux 4.20+). The receive path also
        // drops them, so a failure here is harmless.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a valid int.
        let _ = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                &one as *const libc::c_int as *const libc::c_void,
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(DeviceSocket { fd, ifindex })
    }
}

impl DeviceSocket {
    /// Register with the current runtime's IO driver (readable and error interest: frames
    /// are sent with non-blocking `sendto` directly).
    fn register(self, device: &str) -> Result<Registered, L2Error> {
        let ifindex = self.ifindex;
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open, and is the same fd,
        // until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(self.fd, READINESS) }.map_err(|e| {
            L2Error::Syscall {
                device: device.to_string(),
                syscall: "epoll_ctl (tokio AsyncFd)",
                source: e.into(),
            }
        })?;
        Ok(Registered { fd, ifindex })
    }
}

fn sockaddr_ll(ifindex: i32, dst: Option<Mac>) -> libc::sockaddr_ll {
    // SAFETY: plain data; all zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (arp::ETHERTYPE_ARP).to_be();
    sll.sll_ifindex = ifindex;
    if let Some(m) = dst {
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&m);
    }
    sll
}

/// One device's loop: answer requests, send the gratuitous rounds, survive the device's
/// disappearance by re-opening it by name.
struct DeviceTask {
    device: String,
    shared: Arc<Shared>,
    addresses: watch::Receiver<Arc<BTreeSet<Ipv4Addr>>>,
    /// The set this task last took: what its gratuitous rounds are computed against.
    announced: BTreeSet<Ipv4Addr>,
    /// Gratuitous rounds left, by address.
    pending: BTreeMap<Ipv4Addr, u32>,
    next_round: Option<Instant>,
}

enum Exit {
    /// The Responder is gone.
    Stop,
    /// The socket failed; re-open it.
    Reopen,
}

impl DeviceTask {
    async fn run(mut self, first: Registered) {
        let mut sock = Some(first);
        let mut backoff = REOPEN_MIN;
        loop {
            let s = match sock.take() {
                Some(s) => s,
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        r = self.addresses.changed() => {
                            if r.is_err() { return; }
                            self.take_set(false);
                            continue;
                        }
                    }
                    backoff = (backoff * 2).min(REOPEN_MAX);
                    match DeviceSocket::open(&self.device).and_then(|s| s.register(&self.device)) {
                        Ok(s) => {
                            info!(device = %self.device, ifindex = s.ifindex, "L2 announcer: device re-opened");
                            backoff = REOPEN_MIN;
                            // The device may be new (re-created, new MAC): announce all.
                            self.take_set(true);
                            s
                        }
                        Err(e) => {
                            self.shared.record(&self.device, e.to_string());
                            continue;
                        }
                    }
                }
            };
            match self.serve(&s).await {
                Exit::Stop => return,
                Exit::Reopen => drop(s),
            }
        }
    }

    /// Read the current set; queue gratuitous rounds for the addresses new to this task
    /// (or for all of them with `all`), drop the rounds of removed ones.
    fn take_set(&mut self, all: bool) {
        let set = self.addresses.borrow_and_update().clone();
        for ip in set.iter() {
            if all || !self.announced.contains(ip) {
                self.pending.insert(*ip, GRATUITOUS_ROUNDS);
            }
        }
        self.pending.retain(|ip, _| set.contains(ip));
        self.announced = (*set).clone();
        if self.pending.is_empty() {
            self.next_round = None;
        } else if self.next_round.is_none() {
            self.next_round = Some(Instant::now());
        }
    }

    async fn serve(&mut self, s: &Registered) -> Exit {
        // Anything changed while the socket was being (re-)opened.
        self.take_set(false);
        let mut buf = [0u8; 1600];
        let mut check = tokio::time::interval_at(Instant::now() + CHECK_EVERY, CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let round = self.next_round;
            tokio::select! {
                r = self.addresses.changed() => {
                    if r.is_err() {
                        return Exit::Stop;
                    }
                    self.take_set(false);
                }
                _ = tokio::time::sleep_until(round.unwrap_or_else(Instant::now)), if round.is_some() => {
                    if let Err(e) = self.gratuitous_round(s) {
                        self.shared.record(&self.device, e);
                        return Exit::Reopen;
                    }
                }
                _ = check.tick() => {
                    // A backstop for a missed ENETDOWN (say the device was deleted and
                    // re-created between two wake-ups): the name must still lead to the
                    // ifindex the socket is bound to.
                    let now = ioctl(s.fd.get_ref().as_raw_fd(), &self.device, libc::SIOCGIFINDEX, "ioctl SIOCGIFINDEX")
                        // SAFETY: SIOCGIFINDEX fills ifru_ifindex.
                        .map(|r| unsafe { r.ifr_ifru.ifru_ifindex });
                    match now {
                        Ok(i) if i == s.ifindex => {}
                        Ok(i) => {
                            self.shared.record(&self.device, format!("ifindex changed from {} to {i}", s.ifindex));
                            return Exit::Reopen;
                        }
                        Err(e) => {
                            self.shared.record(&self.device, e.to_string());
                            return Exit::Reopen;
                        }
                    }
                }
                ready = s.fd.ready(READINESS) => {
                    let mut guard = match ready {
                        Ok(g) => g,
                        Err(e) => {
                            self.shared.record(&self.device, format!("poll: {e}"));
                            return Exit::Reopen;
                        }
                    };
                    for _ in 0..READ_BATCH {
                        match guard.try_io(|fd| recv(fd.get_ref().as_raw_fd(), &mut buf)) {
                            Err(_would_block) => break,
                            Ok(Ok((len, pkttype))) => {
                                if let Err(e) = self.on_frame(s, &buf[..len], pkttype) {
                                    self.shared.record(&self.device, e);
                                    return Exit::Reopen;
                                }
                            }
                            Ok(Err(e)) => {
                                // ENETDOWN: the device went down or was deleted; the
                                // socket is unhooked from it until re-opened.
                                self.shared.record(&self.device, format!("recvfrom: {e}"));
                                return Exit::Reopen;
                            }
                        }
                    }
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    /// Answer one frame if it is a request for an address of the current set.
    fn on_frame(&self, s: &Registered, frame: &[u8], pkttype: u8) -> Result<(), String> {
        if pkttype == libc::PACKET_OUTGOING {
            return Ok(());
        }
        let Some(req) = arp::parse_request(frame) else {
            return Ok(());
        };
        // The current value, not `announced` (this task's copy, updated when it gets to
        // the change): a request handled after `set_addresses` returned is judged
        // against the new set, even if this task has not yet taken the change.
        if !self.addresses.borrow().contains(&req.target_ip) {
            return Ok(());
        }
        // The MAC is read now, not cached: a MAC changed with `ip link set address` is
        // used from the next reply on. One ioctl per request for one of our addresses.
        let mac =
            device_mac(s.fd.get_ref().as_raw_fd(), &self.device).map_err(|e| e.to_string())?;
        if !arp::is_answerable(&req, mac) {
            return Ok(());
        }
        let reply = arp::reply(&req, mac, req.target_ip);
        match send(s, &reply, req.sender_mac) {
            Ok(()) => {
                self.shared.replies.fetch_add(1, Ordering::Relaxed);
                debug!(device = %self.device, ip = %req.target_ip, to = %arp::format_mac(&req.sender_mac), "ARP reply");
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                debug!(device = %self.device, "ARP reply dropped: socket buffer full");
                Ok(())
            }
            Err(e) => Err(format!("sendto: {e}")),
        }
    }

    /// One gratuitous round: both frames for every pending address (all still in the set,
    /// see `take_set`), then schedule the next round if any is left.
    fn gratuitous_round(&mut self, s: &Registered) -> Result<(), String> {
        let mac =
            device_mac(s.fd.get_ref().as_raw_fd(), &self.device).map_err(|e| e.to_string())?;
        for (ip, left) in self.pending.iter_mut() {
            for f in arp::gratuitous(mac, *ip) {
                match send(s, &f, arp::BROADCAST) {
                    Ok(()) => {
                        self.shared.gratuitous.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(format!("sendto: {e}")),
                }
            }
            debug!(device = %self.device, ip = %ip, "gratuitous ARP");
            *left = left.saturating_sub(1);
        }
        self.pending.retain(|_, left| *left > 0);
        self.next_round = if self.pending.is_empty() {
            None
        } else {
            Some(Instant::now() + GRATUITOUS_INTERVAL)
        };
        Ok(())
    }
}

/// `recvfrom` one frame: its length and packet type (PACKET_HOST, _BROADCAST, ...).
fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, u8)> {
    // SAFETY: plain data.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: buf and sll are valid for the lengths given.
    let n = unsafe {
        libc::recvfrom(
            fd,
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            0,
            &mut sll as *mut libc::sockaddr_ll as *mut libc::sockaddr,
            &mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize, sll.sll_pkttype))
}

/// `sendto` a whole Ethernet frame through the device's socket.
fn send(s: &Registered, frame: &[u8; FRAME_LEN], dst: Mac) -> io::Result<()> {
    let sll = sockaddr_ll(s.ifindex, Some(dst));
    // SAFETY: frame and sll are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            s.fd.get_ref().as_raw_fd(),
            frame.as_ptr() as *const libc::c_void,
            frame.len(),
            0,
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_runtime_is_an_error() {
        assert!(matches!(
            Responder::start(&["lo".to_string()]),
            Err(L2Error::NoRuntime)
        ));
    }

    #[tokio::test]
    async fn a_device_listed_twice_is_an_error_naming_it() {
        let e = Responder::start(&["eth9".to_string(), "eth9".to_string()])
            .err()
            .expect("an error");
        assert!(matches!(&e, L2Error::Duplicate { device } if device == "eth9"));
        assert_eq!(e.to_string(), "L2 device \"eth9\" is listed twice");
    }

    #[test]
    fn device_names() {
        for bad in ["", "sixteen-chars-xx", "a\0b"] {
            assert!(
                matches!(ifreq(bad), Err(L2Error::BadName { ref device }) if device == bad),
                "{bad:?}"
            );
        }
        let r = ifreq("fifteen-chars-x").expect("15 bytes fit");
        assert_eq!(r.ifr_name[14], b'x' as libc::c_char);
        assert_eq!(r.ifr_name[15], 0);
    }
}
