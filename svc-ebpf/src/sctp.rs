//! SCTP (IP protocol 132), translated by address only. SCTP's checksum is a CRC32c over the
//! SCTP packet (common header and chunks) and, unlike TCP's and UDP's, covers no IP
//! pseudo-header (RFC 9260 6.8): rewriting the IPv4 addresses (and fixing the IPv4 header
//! checksum) leaves it valid. Rewriting a port would need the CRC computed again over the
//! whole packet, which these programs do not do (a loop over variable-length packet data,
//! which the verifier refuses without a helper; no kernel helper computes CRC32c), so:
//! - DNAT: the agent serves an SCTP frontend only where its backends listen on the
//!   frontend's own port (targetPort == port, no NodePorts: a nodePort differs from the
//!   targetPort); `lb::new_flow` refuses a backend on another port (drop_rewrite_failed);
//! - masquerade and the reply-tuple rule keep the client's port: no port search; a clash
//!   with another live flow's reply tuple drops the new flow (drop_nat_failed);
//! - the rewrite code of TC and XDP refuses to change an SCTP port (drop_rewrite_failed):
//!   a packet never leaves with a CRC that does not match.
//!
//! Not supported: port translation; multi-homing (INIT and INIT-ACK carry address
//! parameters, which are not translated: an association through a Service uses its
//! primary path only). Chunks are not tracked: a flow's entries live CT_SCTP_TIMEOUT_NS
//! after its last packet, as UDP's do. No SCTP reject: a Service without endpoints answers
//! with ICMP port unreachable, as kube-proxy's REJECT does for every protocol but TCP.
use svc_common::PROTO_SCTP;

/// The SCTP common header: ports at the offsets TCP and UDP have them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SctpHdr {
    pub sport_be: u16,
    pub dport_be: u16,
    pub vtag_be: u32,
    /// CRC32c of the SCTP packet (never touched here).
    pub csum: u32,
}

/// Whether `proto`'s ports must not change (SCTP: the CRC covers them).
#[inline(always)]
pub fn ports_fixed(proto: u8) -> bool {
    proto == PROTO_SCTP
}
