//! Loading the real programs on maps pinned under a directory of their own, filling the
//! maps through the real reconciler, one BPF_PROG_TEST_RUN with its verdict counter deltas,
//! and the check of a table case (return value, exact output bytes with a readable diff and
//! their checksums, the one counter that went up).
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs at /sys/fs/bpf (mounted if absent).
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use aya::programs::{TestRun, TestRunOptions};
use svc_agent::dataplane::{Datapath, DatapathConfig, DetectLocal, Maps};
use svc_agent::desired::{DesiredState, Ipv4Cidr};
use svc_agent::packet::{hex_diff, parse_summary, verify_checksums};
use svc_agent::reconcile::{Reconciler, SyncReport};
use svc_common::Verdict;

use super::ip;

pub const TC_ACT_OK: u32 = 0;

pub const TC_ACT_SHOT: u32 = 2;

/// What `bpf_redirect` returns; the test run does not perform the redirect.
pub const TC_ACT_REDIRECT: u32 = 7;

pub const XDP_DROP: u32 = 1;

pub const XDP_PASS: u32 = 2;

/// Node 1's address in the two-node lab: its NodePort address and masquerade source.
pub const NODE_IP: &str = "192.0.2.1";

/// The agent's defaults: no pod CIDR and no masquerade address, so nothing is masqueraded.
pub fn default_config() -> DatapathConfig {
    DatapathConfig::default()
}

/// Node 1 of the two-node lab as its agent runs: pod CIDR 10.244.0.0/16 (node 1's pods
/// are 10.244.1.0/24, node 2's 10.244.2.0/24), masquerade address 192.0.2.1.
pub fn node1_config() -> DatapathConfig {
    DatapathConfig {
        detect_local: DetectLocal::Cidr,
        pod_cidrs: vec![Ipv4Cidr::new(ip("10.244.0.0"), 16).into()],
        masquerade_addr: Some(ip(NODE_IP)),
        ..Default::default()
    }
}

/// Node 1 for the fixture tables: masquerade ports widened to 30000-65535, so a client's
/// own port is kept and the expected frames are exact.
pub fn node1_fixture_config(masquerade_all: bool) -> DatapathConfig {
    DatapathConfig {
        masquerade_all,
        masquerade_ports: (30000, 65535),
        ..node1_config()
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

/// Removes the pin directory when dropped (also on panic).
pub struct PinDir(pub PathBuf);

impl PinDir {
    /// `/sys/fs/bpf/svl-<pid>-<tag>-<nanos>`, not created: unique per run, and named like
    /// the lab's objects so the lab's stale cleanup removes it if this process dies
    /// without unwinding.
    pub fn unique(tag: &str) -> PinDir {
        ensure_bpffs();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/svl-{}-{tag}-{nanos}",
            std::process::id()
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("warning: cannot remove {}: {e}", self.0.display());
        }
    }
}

/// Serialises the tests of a binary that load programs or touch maps, so they never run
/// concurrently even without --test-threads=1.
static KERNEL: Mutex<()> = Mutex::new(());

pub fn kernel_lock() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one may still run.
    KERNEL.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prog {
    Tc,
    Xdp,
}

/// A loaded datapath on maps of its own. The fields drop in order: programs and maps, then
/// the pins, then the kernel lock.
pub struct Harness {
    pub datapath: Datapath,
    pub maps: Maps,
    /// Adopted from the maps at the first [`sync`](Self::sync), kept for later ones.
    reconciler: Option<Reconciler>,
    dir: PinDir,
    _kernel: MutexGuard<'static, ()>,
}

pub struct RunResult {
    pub ret: u32,
    /// The output frame (XDP: without the metadata in front of it).
    pub out: Vec<u8>,
    /// Counters that changed, with how much.
    pub delta: Vec<(Verdict, u64)>,
    /// XDP: the metadata the program left in front of the frame (the mark of a packet XDP
    /// counted, which TC then does not count again: svc-ebpf/src/counters.rs).
    pub meta: Vec<u8>,
}

/// The verdicts of packets XDP passes on untouched: XDP counts nothing for them (TC,
/// which sees the same packet next, decides it and counts its own verdict).
pub fn xdp_passes_untouched(verdict: Verdict) -> bool {
    matches!(
        verdict,
        Verdict::PassNotIp
            | Verdict::PassNotService
            | Verdict::PassFragment
            | Verdict::PassOtherProto
            | Verdict::XdpPassToTc
            | Verdict::PassIpv6Unparsed
    )
}

impl Harness {
    /// Loads the programs with `config` on maps pinned under a new directory (see
    /// [`PinDir::unique`]); holds the kernel lock until dropped.
    pub fn load(tag: &str, config: &DatapathConfig) -> Harness {
        let kernel = kernel_lock();
        let dir = PinDir::unique(tag);
        let (datapath, maps) = Datapath::load(&dir.0, config).unwrap_or_else(|e| {
            panic!(
                "loading the datapath with pins under {}: {} (needs root)",
                dir.0.display(),
                svc_agent::dataplane::report::chain_text(&e)
            )
        });
        Harness {
            datapath,
            maps,
            reconciler: None,
            dir,
            _kernel: kernel,
        }
    }

    pub fn pin_dir(&self) -> &Path {
        &self.dir.0
    }

    /// Writes `desired` to the maps through the real reconciler, as the agent's sync does;
    /// panics on any map error.
    pub fn sync(&mut self, desired: &DesiredState) -> SyncReport {
        let maps = &self.maps;
        let reconciler = self
            .reconciler
            .get_or_insert_with(|| Reconciler::adopt(maps).expect("adopting the new (empty) maps"));
        let report = reconciler.sync(desired, &mut self.maps);
        assert!(report.errors.is_empty(), "sync errors: {:?}", report.errors);
        report
    }

    /// One BPF_PROG_TEST_RUN of `prog` on `input`.
    pub fn run(&mut self, prog: Prog, input: &[u8]) -> RunResult {
        self.try_run(prog, input).unwrap_or_else(|e| {
            panic!(
                "BPF_PROG_TEST_RUN ({prog:?}, {} bytes in): {e}",
                input.len()
            )
        })
    }

    /// One BPF_PROG_TEST_RUN of `prog` on `input`; an error if the kernel refused the run
    /// (it does, with EINVAL, for frames too short for the header their EtherType
    /// announces), so a fuzzer can count those.
    pub fn try_run(&mut self, prog: Prog, input: &[u8]) -> Result<RunResult, String> {
        let before = self.maps.verdict_totals().expect("reading SVC_STATS");
        let mut buf = vec![0u8; 4096];
        let opts = TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut buf),
            ..TestRunOptions::new()
        };
        // XDP: an xdp_md in and out, for the length of the metadata in the output.
        let ctx_in = svc_agent::trace::XdpMd {
            data_end: input.len() as u32,
            ..Default::default()
        };
        let mut ctx_out = svc_agent::trace::XdpMd::default();
        let result = match prog {
            Prog::Tc => self
                .datapath
                .tc_program()
                .expect("tc program")
                .test_run(opts),
            Prog::Xdp => {
                self.datapath
                    .xdp_program()
                    .expect("xdp program")
                    .test_run(TestRunOptions {
                        ctx_in: Some(bytemuck::bytes_of(&ctx_in)),
                        ctx_out: Some(bytemuck::bytes_of_mut(&mut ctx_out)),
                        ..opts
                    })
            }
        }
        .map_err(|e| format!("{e:?}"))?;
        let after = self.maps.verdict_totals().expect("reading SVC_STATS");
        let delta = before
            .iter()
            .zip(&after)
            .filter(|((_, b), (_, a))| a != b)
            .map(|((v, b), (_, a))| (*v, a.wrapping_sub(*b)))
            .collect();
        buf.truncate(result.data_size_out as usize);
        let meta: Vec<u8> = buf
            .drain(..(ctx_out.data as usize).min(buf.len()))
            .collect();
        Ok(RunResult {
            ret: result.return_value,
            out: buf,
            delta,
            meta,
        })
    }

    /// A step of a sequence whose output depends on an earlier random choice: checks the
    /// return value, the counter and (for a rewritten frame) the checksums, and returns the
    /// output for the caller to compare.
    pub fn expect(
        &mut self,
        name: &str,
        prog: Prog,
        input: &[u8],
        ret: u32,
        verdict: Verdict,
    ) -> Vec<u8> {
        self.verify(name, prog, input, ret, &Output::Any, verdict)
    }

    /// Runs a table case and returns its output.
    pub fn check(&mut self, c: &Case) -> Vec<u8> {
        let out = self.verify(c.name, c.prog, &c.input, c.ret, &c.output, c.verdict);
        println!(
            "ok   {:<72} ret {} {:?} -> {}",
            c.name,
            c.ret,
            c.verdict,
            summary(&out)
        );
        out
    }

    /// Runs `input` and checks, in this order, that exactly `verdict` went up by one, the
    /// return value, the output bytes (a diff if they differ), and the checksums of a
    /// rewritten frame.
    fn verify(
        &mut self,
        name: &str,
        prog: Prog,
        input: &[u8],
        ret: u32,
        output: &Output,
        verdict: Verdict,
    ) -> Vec<u8> {
        let r = self.run(prog, input);
        let out = r.out;
        // Each packet is counted once: XDP counts what it drops or translates (and marks
        // the translated ones it passes on, so that TC does not count them again); what it
        // passes on untouched, TC counts.
        let (expected, mark) = if prog == Prog::Xdp && ret == XDP_PASS {
            if xdp_passes_untouched(verdict) {
                (vec![], false)
            } else {
                (vec![(verdict, 1)], true)
            }
        } else {
            (vec![(verdict, 1)], false)
        };
        assert_eq!(
            r.delta,
            expected,
            "case {name:?}: verdict counters that changed (expected only {verdict:?} +1, none \
             for a packet XDP passes on untouched); output {}",
            summary(&out)
        );
        let want_meta = if mark {
            svc_common::XDP_COUNTED_MARK.to_ne_bytes().to_vec()
        } else {
            vec![]
        };
        assert_eq!(
            r.meta, want_meta,
            "case {name:?}: XDP metadata (the counted mark on a translated packet XDP passes on)"
        );
        assert_eq!(
            r.ret,
            ret,
            "case {name:?}: return value (verdict {verdict:?}); output {}",
            summary(&out)
        );
        match output {
            Output::Unchanged => bytes_eq(name, input, &out),
            Output::Exact(expected) => bytes_eq(name, expected, &out),
            Output::OneOf(candidates) => {
                if !candidates.contains(&out) {
                    let diffs: Vec<String> = candidates.iter().map(|f| hex_diff(f, &out)).collect();
                    panic!(
                        "case {name:?}: output is none of the {} expected frames:\n{}",
                        candidates.len(),
                        diffs.join("\n")
                    );
                }
            }
            Output::Any => {}
        }
        // An unchanged frame keeps whatever checksums the input had (cut or odd frames
        // included); an expected rewrite must have right ones.
        let rewritten = match output {
            Output::Unchanged => false,
            Output::Exact(_) | Output::OneOf(_) => true,
            Output::Any => out != input,
        };
        if rewritten {
            verify_checksums(&out)
                .unwrap_or_else(|e| panic!("case {name:?}: output checksum: {e}"));
        }
        out
    }

    /// Runs the cases in order: later ones may depend on the conntrack state of earlier ones.
    pub fn run_table(&mut self, cases: &[Case]) {
        for c in cases {
            self.check(c);
        }
    }
}

pub enum Output {
    /// The frame comes back as it went in.
    Unchanged,
    /// Exactly these bytes.
    Exact(Vec<u8>),
    /// Exactly one of these frames (a backend choice among several).
    OneOf(Vec<Vec<u8>>),
    /// Any frame, for [`Harness::expect`]: the caller compares it.
    Any,
}

/// One fixture: the program, the input frame, what the program must return and output, and
/// the verdict counter that must go up by exactly one.
pub struct Case {
    pub name: &'static str,
    pub prog: Prog,
    pub input: Vec<u8>,
    pub ret: u32,
    pub output: Output,
    pub verdict: Verdict,
}

pub fn case(
    name: &'static str,
    prog: Prog,
    input: Vec<u8>,
    ret: u32,
    output: Output,
    verdict: Verdict,
) -> Case {
    Case {
        name,
        prog,
        input,
        ret,
        output,
        verdict,
    }
}

pub fn summary(frame: &[u8]) -> String {
    parse_summary(frame)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("{} bytes, not IPv4", frame.len()))
}

/// Panics with both frames' summaries and a byte diff unless they are equal.
pub fn bytes_eq(name: &str, expected: &[u8], got: &[u8]) {
    if expected != got {
        panic!(
            "case {name:?}: output bytes differ\n  expected: {}\n  got:      {}\n{}",
            summary(expected),
            summary(got),
            hex_diff(expected, got)
        );
    }
}

pub fn dst_of(frame: &[u8]) -> SocketAddrV4 {
    parse_summary(frame)
        .and_then(|s| s.dst_socket())
        .expect("an IPv4 TCP/UDP frame")
}

pub fn src_of(frame: &[u8]) -> SocketAddrV4 {
    parse_summary(frame)
        .and_then(|s| s.src_socket())
        .expect("an IPv4 TCP/UDP frame")
}
