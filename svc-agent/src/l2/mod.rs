//! The L2 announcer's ARP responder (issue 15, MetalLB's "L2 mode"): makes a LoadBalancer
//! Service's external IPv4 address, on the LAN's subnet, reachable from LAN hosts that
//! have no route to it, by answering ARP requests for it with the MAC of this node's
//! LAN-facing device. Which node announces which address is decided elsewhere (a Lease
//! per Service); this module only answers for the set it is given.
//!
//! - [`arp`]: the frames, pure (parse a request, build a reply and the gratuitous ARP).
//! - [`responder`]: [`Responder`], one AF_PACKET socket and one tokio task per device.
//! - [`announcer`]: which Services' addresses this node answers for (a Lease per Service).
//!
//! Decisions:
//! - **Userspace, not XDP.** The answers stop the moment the agent dies, which is what
//!   the Lease measures; an XDP responder would keep answering from a dead agent's node
//!   while another node takes over. ARP is not hot-path traffic, and the XDP program stays
//!   a pure IP datapath (ARP frames pass it to the kernel, which does not answer for
//!   addresses it does not hold, so there is exactly one answer: ours).
//! - **IPv4 only.** ARP; IPv6 neighbour discovery (NDP) is out of scope, as in Cilium's
//!   L2 announcements.
//! - **Exactly the current set.** A request is answered only if its target is in the set
//!   of the last [`Responder::set_addresses`]; probes (sender 0.0.0.0, RFC 5227) are
//!   answered too ([`arp::is_answerable`] says why). Untagged frames only: announce a VLAN
//!   on its VLAN device.
//! - **Gratuitous ARP** when an address starts being announced (on every device,
//!   [`responder::GRATUITOUS_ROUNDS`] rounds [`responder::GRATUITOUS_INTERVAL`] apart, each
//!   round one request-style and one reply-style frame: [`arp::gratuitous`] says why both).
//!   Linux hosts with the default `arp_accept=0` update an entry they already have from
//!   it (what failover needs: the old node's MAC is replaced) but do not create one; the
//!   integration test (svc-agent/tests/l2_responder.rs) checks both.
//! - **The device's MAC** is read (SIOCGIFHWADDR) for every reply and every gratuitous
//!   round, so `ip link set DEV address ...` takes effect at once. A device that goes
//!   down or is deleted makes its socket fail (the kernel sets ENETDOWN on it and wakes
//!   it with EPOLLERR, hence the task waits for error readiness too; every 5 s it also
//!   checks that the name still has the ifindex it is bound to); the task records the
//!   error ([`Responder::device_errors`]) and re-opens the device by name with a backoff
//!   (250 ms doubling to 5 s), so a re-created device (new ifindex) is served again, and
//!   then announces every address of the set again with gratuitous ARP.
//! - **Network namespace**: the sockets are opened in the namespace of the thread that
//!   calls [`Responder::start`]; a re-open runs on the runtime's threads, so they must be
//!   in the same namespace (always so for the agent).
//! - **Logging**: start, errors (once per distinct error) and re-opens at info/warn;
//!   per-packet lines at debug only.
pub mod announcer;
pub mod arp;
pub mod responder;

pub use responder::{DeviceError, L2Error, Responder};
