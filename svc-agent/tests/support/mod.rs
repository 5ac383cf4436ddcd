//! What both BPF_PROG_TEST_RUN fixture files share: program return codes, frame
//! addresses, the pin-directory guard, the bpffs mount and one test run with its verdict
//! counter deltas. Each file builds its own case table and checks on top.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use aya::programs::{TestRun, TestRunOptions};
use svc_agent::dataplane::{Datapath, Maps};
use svc_common::Verdict;

pub const TC_ACT_OK: u32 = 0;

pub const TC_ACT_SHOT: u32 = 2;

/// What `bpf_redirect` returns; the test run does not perform the redirect.
pub const TC_ACT_REDIRECT: u32 = 7;

pub const XDP_DROP: u32 = 1;

pub const XDP_PASS: u32 = 2;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0xaa, 0x00, 0x00, 0x00, 0x01];

pub const NODE_MAC: [u8; 6] = [0x02, 0xbb, 0x00, 0x00, 0x00, 0x02];

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub fn sa(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

/// Removes the pin directory when dropped (declared before the datapath, so dropped after
/// it, and also on panic).
pub struct PinDir(pub PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("warning: cannot remove {}: {e}", self.0.display());
        }
    }
}

pub fn ensure_bpffs() {
    use nix::sys::statfs::{BPF_FS_MAGIC, statfs};
    let root = Path::new("/sys/fs/bpf");
    let is_bpffs = |p: &Path| {
        statfs(p)
            .map(|s| s.filesystem_type() == BPF_FS_MAGIC)
            .unwrap_or(false)
    };
    if !is_bpffs(root) {
        std::fs::create_dir_all(root).ok();
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("mount -t bpf bpf /sys/fs/bpf: {e} (the test needs root)"));
        assert!(is_bpffs(root), "/sys/fs/bpf is not bpffs after mounting it");
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prog {
    Tc,
    Xdp,
}

pub struct Harness {
    pub datapath: Datapath,
    pub maps: Maps,
}

pub struct RunResult {
    pub ret: u32,
    pub out: Vec<u8>,
    /// Counters that changed, with how much.
    pub delta: Vec<(Verdict, u64)>,
}

impl Harness {
    pub fn run(&mut self, prog: Prog, input: &[u8]) -> RunResult {
        let before = self.maps.verdict_totals().expect("reading SVC_STATS");
        let mut buf = vec![0u8; 4096];
        let opts = TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut buf),
            ..TestRunOptions::new()
        };
        let result = match prog {
            Prog::Tc => self
                .datapath
                .tc_program()
                .expect("tc program")
                .test_run(opts),
            Prog::Xdp => self
                .datapath
                .xdp_program()
                .expect("xdp program")
                .test_run(opts),
        }
        .unwrap_or_else(|e| {
            panic!(
                "BPF_PROG_TEST_RUN ({prog:?}, {} bytes in): {e:?}",
                input.len()
            )
        });
        let after = self.maps.verdict_totals().expect("reading SVC_STATS");
        let delta = before
            .iter()
            .zip(&after)
            .filter(|((_, b), (_, a))| a != b)
            .map(|((v, b), (_, a))| (*v, a.wrapping_sub(*b)))
            .collect();
        buf.truncate(result.data_size_out as usize);
        RunResult {
            ret: result.return_value,
            out: buf,
            delta,
        }
    }
}
