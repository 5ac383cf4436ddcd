//! Loading the object and attaching its programs: [`Datapath::load`] creates or adopts
//! every pinned map (refusing pins of another layout first) and loads the programs with the
//! node's facts as load-time globals; the `attach_*` methods hook them to interfaces and a
//! cgroup through pinned links (see [`links`]).
use std::{
    collections::BTreeMap,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::MapError,
    programs::{
        CgroupAttachMode, CgroupSockAddr, ProgramError, SchedClassifier, TcAttachType, Xdp,
        XdpMode, links::FdLink,
    },
};
use svc_common::{
    BENCH_PASS_PROG, CONNECT4_PROG, CONNECT6_PROG, RECVMSG4_PROG, RECVMSG6_PROG, SENDMSG4_PROG,
    SENDMSG6_PROG, TC_PROG, XDP_PROG, map_names,
};

use super::{
    BpffsLock, DatapathConfig, DataplaneError, Maps,
    links::{self, Hook, LINKS_SUBDIR},
    map_err,
    maps::{MAP_SPECS, check_layout, check_pin},
};

/// The eBPF object built by build.rs (aya-build) from svc-ebpf.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/svc-ebpf"));

/// What attaching a hook did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// This agent already holds it.
    AlreadyHeld,
    /// A link pinned by an earlier agent now runs this agent's program (atomic switch).
    Adopted { link_id: u32, old_program_id: u32 },
    /// A new link, now pinned.
    New,
}

/// For the log: `new`, `already held`, `adopted link 7 (was program 12)`.
impl std::fmt::Display for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attached::AlreadyHeld => f.write_str("already held"),
            Attached::Adopted {
                link_id,
                old_program_id,
            } => write!(f, "adopted link {link_id} (was program {old_program_id})"),
            Attached::New => f.write_str("new"),
        }
    }
}

impl Attached {
    /// True if this call changed what is attached (for logging once).
    pub fn changed(self) -> bool {
        self != Attached::AlreadyHeld
    }
}

/// The loaded programs and the hooks this agent holds. Every attachment is a pinned link
/// (see [`links`]): it outlives the agent process, and the next agent switches it to its
/// own program instances.
pub struct Datapath {
    ebpf: Ebpf,
    /// The pin directory's lock, for a datapath loaded by the agent ([`Datapath::load_locked`]):
    /// held as long as these programs are the agent's.
    _lock: Option<BpffsLock>,
    links_dir: PathBuf,
    /// Hooks attached or adopted by this agent, by pin name.
    held: BTreeMap<String, Hook>,
}

impl Datapath {
    /// The agent's load: [`load`](Self::load) on the directory `lock` holds, keeping the
    /// lock for as long as the datapath lives (so no second agent adopts the same pins).
    pub fn load_locked(
        lock: BpffsLock,
        config: &DatapathConfig,
    ) -> Result<(Datapath, Maps), DataplaneError> {
        let dir = lock.dir().to_path_buf();
        let (mut datapath, maps) = Datapath::load(&dir, config)?;
        datapath._lock = Some(lock);
        Ok((datapath, maps))
    }

    /// Loads the object with every map pinned under `dir` (reusing compatible pins, so
    /// conntrack and services survive a restart) and loads the programs into the kernel
    /// (not attached yet: see the `attach_*` methods). Returns the datapath and the maps.
    /// Takes no lock: for directories of one process (tests, svcctl trace's scratch copy,
    /// benchmarks); the agent locks its directory first ([`load_locked`](Self::load_locked)).
    pub fn load(dir: &Path, config: &DatapathConfig) -> Result<(Datapath, Maps), DataplaneError> {
        Datapath::load_object(dir, config, EBPF_OBJECT)
    }

    /// As [`load`](Self::load), with another build's object instead of this one's
    /// [`EBPF_OBJECT`] (the benchmark measures an earlier build next to this one). The object
    /// must have this build's map layout, which the pins' checks enforce.
    pub fn load_object(
        dir: &Path,
        config: &DatapathConfig,
        object: &[u8],
    ) -> Result<(Datapath, Maps), DataplaneError> {
        if object.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        check_bpffs(dir)?;
        // Refuse an incompatible set before creating anything next to it.
        for spec in MAP_SPECS {
            check_pin(dir, spec, Some(config.map_sizes.max_entries(spec)))?;
        }
        check_layout(dir)?;
        let links_dir = dir.join(LINKS_SUBDIR);
        std::fs::create_dir_all(&links_dir).map_err(|source| DataplaneError::PinDir {
            dir: links_dir.clone(),
            source,
        })?;
        let raw = config.to_raw();
        // Socket-program globals: not in DatapathConfig4 (svcctl trace runs the packet
        // programs only).
        let sock_lb_pods = u32::from(config.sock_lb_pods);
        let mut loader = EbpfLoader::new();
        for spec in MAP_SPECS {
            loader.map_max_entries(spec.name, config.map_sizes.max_entries(spec));
        }
        let mut ebpf = loader
            .default_map_pin_directory(dir)
            .override_global("DETECT_LOCAL", &raw.detect_local, true)
            .override_global("MASQ_ADDR_BE", &raw.masq_addr_be, true)
            // [u32; 4], each word in network order; all zero: never masquerade IPv6.
            .override_global("MASQ_ADDR6_BE", &raw.masq_addr6_be, true)
            .override_global("MASQUERADE_ALL", &raw.masquerade_all, true)
            .override_global("NAT_PORT_MIN", &raw.nat_port_min, true)
            .override_global("NAT_PORT_MAX", &raw.nat_port_max, true)
            .override_global("SOCK_LB_PODS", &sock_lb_pods, true)
            .override_global("HOST_NETNS_COOKIE", &config.host_netns_cookie, true)
            .load(object)?;
        let tc: &mut SchedClassifier = program(&mut ebpf, TC_PROG)?;
        tc.load().map_err(prog_err(TC_PROG, ""))?;
        let xdp: &mut Xdp = program(&mut ebpf, XDP_PROG)?;
        xdp.load().map_err(prog_err(XDP_PROG, ""))?;
        for name in CGROUP_PROGS {
            let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            prog.load().map_err(prog_err(name, ""))?;
        }
        let mut maps = Maps::from_maps(|name| {
            ebpf.take_map(name).ok_or(DataplaneError::Map {
                name,
                source: MapError::InvalidName {
                    name: name.to_string(),
                },
            })
        })?;
        // What these programs were loaded with, for svcctl trace. Written before any link
        // points at them; a program instance of another agent still attached reads its
        // own globals, never this map.
        maps.config
            .set(0, raw, 0)
            .map_err(map_err(map_names::SVC_CONFIG))?;
        // The pod CIDRs these programs start with (detect-local by address), replacing
        // what pinned maps of an earlier agent hold.
        maps.set_pod_cidrs(&config.pod_cidrs)
            .map_err(DataplaneError::Read)?;
        // Pod interfaces are the agent's to list as it attaches; a test by address leaves
        // none behind from an earlier agent that tested interfaces.
        if config.detect_local != super::DetectLocal::Interface {
            maps.set_pod_ifaces(&Default::default())
                .map_err(DataplaneError::Read)?;
        }
        Ok((
            Datapath {
                ebpf,
                _lock: None,
                links_dir,
                held: BTreeMap::new(),
            },
            maps,
        ))
    }

    /// Attaches `hook`: adopts (and switches to this agent's program) the link an earlier
    /// agent pinned for it, or makes and pins a new one. Idempotent.
    pub fn attach(&mut self, hook: Hook) -> Result<Attached, DataplaneError> {
        let name = hook.pin_name();
        if self.held.contains_key(&name) {
            return Ok(Attached::AlreadyHeld);
        }
        let path = self.links_dir.join(&name);
        let prog_name = match &hook {
            Hook::TcIngress { .. } => TC_PROG,
            Hook::Xdp { .. } => XDP_PROG,
            Hook::Cgroup { program, .. } => *program,
        };
        let link_err = |source| DataplaneError::Link {
            hook: name.clone(),
            source,
        };
        let prog_fd = self
            .ebpf
            .program(prog_name)
            .ok_or_else(|| invalid_program(prog_name))?
            .fd()
            .map_err(prog_err(prog_name, &name))?;
        match links::update_pinned(&path, prog_fd.as_fd()).map_err(link_err)? {
            links::Adopted::Replaced {
                link_id,
                old_program_id,
            } => {
                self.held.insert(name, hook);
                return Ok(Attached::Adopted {
                    link_id,
                    old_program_id,
                });
            }
            links::Adopted::NoPin | links::Adopted::Defunct => {}
        }
        let fd_link: FdLink = match &hook {
            Hook::TcIngress { iface } => {
                let tc: &mut SchedClassifier = program(&mut self.ebpf, TC_PROG)?;
                let id = tc
                    .attach(iface, TcAttachType::Ingress)
                    .map_err(prog_err(TC_PROG, iface))?;
                let link = tc.take_link(id).map_err(prog_err(TC_PROG, iface))?;
                link.try_into().map_err(|e| link_convert_err(&name, e))?
            }
            Hook::Xdp { iface } => {
                let xdp: &mut Xdp = program(&mut self.ebpf, XDP_PROG)?;
                let id = xdp
                    .attach(iface, XdpMode::Default)
                    .map_err(prog_err(XDP_PROG, iface))?;
                let link = xdp.take_link(id).map_err(prog_err(XDP_PROG, iface))?;
                link.try_into().map_err(|e| link_convert_err(&name, e))?
            }
            Hook::Cgroup { program: p, cgroup } => {
                let dir = std::fs::File::open(cgroup).map_err(|source| DataplaneError::Cgroup {
                    path: cgroup.clone(),
                    source,
                })?;
                let target = cgroup.display().to_string();
                let prog: &mut CgroupSockAddr = program(&mut self.ebpf, p)?;
                // No flags: bpf_link_create refuses BPF_F_ALLOW_MULTI (EINVAL), and cgroup
                // links coexist with other links on the same hook anyway.
                let id = prog
                    .attach(&dir, CgroupAttachMode::Single)
                    .map_err(prog_err(p, &target))?;
                let link = prog.take_link(id).map_err(prog_err(p, &target))?;
                link.try_into().map_err(|e| link_convert_err(&name, e))?
            }
        };
        // Pinned, the link outlives its fd (dropped here) and this process.
        fd_link.pin(&path).map_err(|e| DataplaneError::Link {
            hook: name.clone(),
            source: std::io::Error::other(e),
        })?;
        self.held.insert(name, hook);
        Ok(Attached::New)
    }

    /// TC ingress on `iface`.
    pub fn attach_tc(&mut self, iface: &str) -> Result<Attached, DataplaneError> {
        self.attach(Hook::TcIngress {
            iface: iface.to_string(),
        })
    }

    /// XDP on `iface` (native mode where the driver has it).
    pub fn attach_xdp(&mut self, iface: &str) -> Result<Attached, DataplaneError> {
        self.attach(Hook::Xdp {
            iface: iface.to_string(),
        })
    }

    /// The socket-level programs (connect4, sendmsg4, recvmsg4) on the cgroup v2 directory
    /// `cgroup`: processes in it (the node's own) reach Services through them.
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<Vec<Attached>, DataplaneError> {
        CGROUP_PROGS
            .iter()
            .map(|program| {
                self.attach(Hook::Cgroup {
                    program,
                    cgroup: cgroup.to_path_buf(),
                })
            })
            .collect()
    }

    /// Drops the hooks on interfaces that no longer exist, and their pins (the kernel
    /// detached those links with the interface).
    pub fn forget_missing(&mut self, present: &dyn Fn(&str) -> bool) {
        let links_dir = &self.links_dir;
        self.held.retain(|name, hook| match hook.iface() {
            Some(iface) if !present(iface) => {
                let _ = std::fs::remove_file(links_dir.join(name));
                false
            }
            _ => true,
        });
    }

    /// Removes every pinned link this agent does not hold (which detaches it): left by an
    /// earlier agent for an interface or cgroup this one is not configured for, or whose
    /// target is gone. Returns their names.
    pub fn prune_unheld_links(&mut self) -> Vec<String> {
        let mut removed = Vec::new();
        for name in links::pinned_names(&self.links_dir) {
            if !self.held.contains_key(&name)
                && std::fs::remove_file(self.links_dir.join(&name)).is_ok()
            {
                removed.push(name);
            }
        }
        removed
    }

    /// Interfaces with the TC program, in name order.
    pub fn tc_interfaces(&self) -> impl Iterator<Item = &str> {
        self.held.values().filter_map(|h| match h {
            Hook::TcIngress { iface } => Some(iface.as_str()),
            _ => None,
        })
    }

    /// The loaded programs, for BPF_PROG_TEST_RUN (tests, svcctl trace, benchmarks).
    pub fn tc_program(&mut self) -> Result<&mut SchedClassifier, DataplaneError> {
        program(&mut self.ebpf, TC_PROG)
    }

    pub fn xdp_program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        program(&mut self.ebpf, XDP_PROG)
    }

    /// The empty XDP program (returns XDP_PASS), loaded on first use: the benchmark's
    /// per-packet floor. The agent never loads or attaches it.
    pub fn bench_pass_program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        let prog: &mut Xdp = program(&mut self.ebpf, BENCH_PASS_PROG)?;
        if prog.fd().is_err() {
            prog.load().map_err(prog_err(BENCH_PASS_PROG, ""))?;
        }
        Ok(prog)
    }
}

/// The cgroup socket programs, attached together.
const CGROUP_PROGS: [&str; 6] = [
    CONNECT4_PROG,
    SENDMSG4_PROG,
    RECVMSG4_PROG,
    CONNECT6_PROG,
    SENDMSG6_PROG,
    RECVMSG6_PROG,
];

fn prog_err(name: &'static str, target: &str) -> impl FnOnce(ProgramError) -> DataplaneError {
    let iface = target.to_string();
    move |source| DataplaneError::Program {
        name,
        iface,
        source,
    }
}

fn invalid_program(name: &'static str) -> DataplaneError {
    DataplaneError::Program {
        name,
        iface: String::new(),
        source: ProgramError::InvalidName {
            name: name.to_string(),
        },
    }
}

fn link_convert_err(hook: &str, e: aya::programs::links::LinkError) -> DataplaneError {
    DataplaneError::Link {
        hook: hook.to_string(),
        source: std::io::Error::other(e),
    }
}

/// `dir`, or its closest existing ancestor, and whether it is on a bpf filesystem. An
/// error (EACCES) is an error, not "no bpffs": the difference is what a person must fix.
pub(super) fn bpffs_of(dir: &Path) -> Result<(PathBuf, bool), DataplaneError> {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let mut probe = dir;
    // Bounded by the path's depth.
    loop {
        match std::fs::symlink_metadata(probe) {
            Ok(_) => {
                let fs = nix::sys::statfs::statfs(probe).map_err(|e| DataplaneError::Open {
                    path: probe.to_path_buf(),
                    source: e.into(),
                })?;
                return Ok((probe.to_path_buf(), fs.filesystem_type().0 == BPF_FS_MAGIC));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(DataplaneError::Open {
                    path: probe.to_path_buf(),
                    source,
                });
            }
        }
        match probe.parent() {
            Some(parent) => probe = parent,
            None => return Ok((probe.to_path_buf(), false)),
        }
    }
}

/// Refuses `dir` unless it (or its closest existing ancestor) is on a bpf filesystem.
pub(super) fn check_bpffs(dir: &Path) -> Result<(), DataplaneError> {
    match bpffs_of(dir)? {
        (_, true) => Ok(()),
        (_, false) => Err(DataplaneError::NotBpffs {
            dir: dir.to_path_buf(),
        }),
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DataplaneError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| invalid_program(name))?;
    prog.try_into().map_err(|source| DataplaneError::Program {
        name,
        iface: String::new(),
        source,
    })
}
