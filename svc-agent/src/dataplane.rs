//! The one module that touches the BPF side from userspace: loads the object, pins and
//! adopts maps, attaches programs, and gives typed access to every map. The agent writes
//! through it and svcctl reads through it; names and layouts come from svc-common.
pub mod links;

use std::{
    collections::BTreeMap,
    mem::size_of,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, lpm_trie::Key as LpmKey},
    programs::{
        CgroupAttachMode, CgroupSockAddr, ProgramError, SchedClassifier, TcAttachType, Xdp,
        XdpMode, links::FdLink,
    },
};
use links::{Hook, LINKS_SUBDIR};
use svc_common::{
    AFFINITY4_MAP, AFFINITY4_MAP_SIZE, Affinity4Key, Affinity4Value, BACKEND4_MAP,
    BACKEND4_MAP_SIZE, BENCH_PASS_PROG, Backend4, CONFIG_MAP, CONFIG_MAP_SIZE, CONNECT4_PROG,
    CT4_MAP, CT4_MAP_SIZE, Ct4Key, Ct4Value, DatapathConfig4, NAMES_MAP, NAMES_MAP_SIZE,
    RECVMSG4_PROG, REVNAT4_MAP, REVNAT4_MAP_SIZE, RevNat4, SENDMSG4_PROG, SOCK_REVNAT4_MAP,
    SOCK_REVNAT4_MAP_SIZE, SRC_RANGE4_MAP, SRC_RANGE4_MAP_SIZE, STATS_MAP, STATS_MAP_SIZE,
    SVC4_MAP, SVC4_MAP_SIZE, SockRevNat4Key, SockRevNat4Value, SrcRange4, Svc4Key, Svc4Value,
    SvcName, TC_PROG, Verdict, XDP_PROG,
};

/// The eBPF object built by build.rs (aya-build) from svc-ebpf.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/svc-ebpf"));

/// Default bpffs directory for the pins.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/svc-ebpf";

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "this build has no eBPF object (it was built with AYA_BUILD_SKIP=1); rebuild without it"
    )]
    NoObject,
    #[error("{dir} is not on a bpf filesystem; mount one with `mount -t bpf bpf /sys/fs/bpf`")]
    NotBpffs { dir: PathBuf },
    #[error("cannot create {dir}: {source}")]
    PinDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "nothing is pinned at {path}: is svc-agent running with --bpffs {dir}?",
        dir = .path.parent().map(|p| p.display().to_string()).unwrap_or_default()
    )]
    NotPinned { path: PathBuf },
    #[error(
        "pinned map {path} does not match this build ({what}: pinned {pinned}, expected \
         {expected}); it comes from an incompatible version of svc-agent. Either run the \
         version that made it, or start afresh: stop the agent, run `svc-agent cleanup \
         --bpffs {dir}` (detaches the programs and unpins the maps; established connections \
         through Services break) and start this version.",
        dir = .path.parent().map(|p| p.display().to_string()).unwrap_or_default()
    )]
    IncompatiblePin {
        path: PathBuf,
        what: &'static str,
        pinned: u32,
        expected: u32,
    },
    #[error(
        "the maps pinned in {dir} have {} (this build: {}): they come from an incompatible \
         version of svc-agent. Either run the version that made them, or start afresh: stop \
         the agent, run `svc-agent cleanup --bpffs {dir}` (detaches the programs and unpins \
         the maps; established connections through Services break) and start this version.",
        match .pinned { Some(v) => format!("map layout version {v}"), None => "no layout version (an older agent)".to_string() },
        svc_common::LAYOUT_VERSION,
        dir = .dir.display()
    )]
    IncompatibleLayout { dir: PathBuf, pinned: Option<u32> },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("cannot open the cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("link {hook}: {source}")]
    Link {
        hook: String,
        source: std::io::Error,
    },
    #[error("program {name} on {iface}: {source}")]
    Program {
        name: &'static str,
        iface: String,
        source: ProgramError,
    },
}

/// What each map must look like; checked against existing pins before they are reused,
/// because aya reuses a pin without comparing its attributes (aya #837). `max_entries` is
/// the default; [`MapSizes`] sets the sizable ones.
pub struct MapSpec {
    pub name: &'static str,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

pub const MAP_SPECS: [MapSpec; 10] = [
    MapSpec {
        name: SVC4_MAP,
        key_size: size_of::<Svc4Key>() as u32,
        value_size: size_of::<Svc4Value>() as u32,
        max_entries: SVC4_MAP_SIZE,
    },
    MapSpec {
        name: BACKEND4_MAP,
        key_size: 4,
        value_size: size_of::<Backend4>() as u32,
        max_entries: BACKEND4_MAP_SIZE,
    },
    MapSpec {
        name: REVNAT4_MAP,
        key_size: 4,
        value_size: size_of::<RevNat4>() as u32,
        max_entries: REVNAT4_MAP_SIZE,
    },
    MapSpec {
        name: CT4_MAP,
        key_size: size_of::<Ct4Key>() as u32,
        value_size: size_of::<Ct4Value>() as u32,
        max_entries: CT4_MAP_SIZE,
    },
    MapSpec {
        name: AFFINITY4_MAP,
        key_size: size_of::<Affinity4Key>() as u32,
        value_size: size_of::<Affinity4Value>() as u32,
        max_entries: AFFINITY4_MAP_SIZE,
    },
    MapSpec {
        name: SRC_RANGE4_MAP,
        key_size: 4 + size_of::<SrcRange4>() as u32,
        value_size: 1,
        max_entries: SRC_RANGE4_MAP_SIZE,
    },
    MapSpec {
        name: SOCK_REVNAT4_MAP,
        key_size: size_of::<SockRevNat4Key>() as u32,
        value_size: size_of::<SockRevNat4Value>() as u32,
        max_entries: SOCK_REVNAT4_MAP_SIZE,
    },
    MapSpec {
        name: NAMES_MAP,
        key_size: 4,
        value_size: size_of::<SvcName>() as u32,
        max_entries: NAMES_MAP_SIZE,
    },
    MapSpec {
        name: STATS_MAP,
        key_size: 4,
        value_size: 8,
        max_entries: STATS_MAP_SIZE,
    },
    MapSpec {
        name: CONFIG_MAP,
        key_size: 4,
        value_size: size_of::<DatapathConfig4>() as u32,
        max_entries: CONFIG_MAP_SIZE,
    },
];

/// Typed handles on every map.
pub struct Maps {
    pub services: HashMap<MapData, Svc4Key, Svc4Value>,
    pub backends: HashMap<MapData, u32, Backend4>,
    pub revnat: HashMap<MapData, u32, RevNat4>,
    pub ct: HashMap<MapData, Ct4Key, Ct4Value>,
    pub affinity: HashMap<MapData, Affinity4Key, Affinity4Value>,
    pub src_ranges: LpmTrie<MapData, SrcRange4, u8>,
    pub stats: PerCpuArray<MapData, u64>,
    /// Service names for svcctl (the programs never read them): see svc_common::SvcName.
    pub names: HashMap<MapData, u32, SvcName>,
    /// The load-time globals the programs were loaded with (for svcctl trace).
    pub config: Array<MapData, DatapathConfig4>,
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// True if `dir` (or its closest existing ancestor) is on a bpf filesystem.
fn is_bpffs(dir: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let mut probe = dir;
    loop {
        if probe.exists() {
            return nix::sys::statfs::statfs(probe)
                .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
                .unwrap_or(false);
        }
        match probe.parent() {
            Some(parent) => probe = parent,
            None => return false,
        }
    }
}

/// How many entries the sizable maps hold (the agent's --lb-map-max and --ct-map-max).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    /// SVC4_SERVICES, SVC4_BACKENDS, SVC4_REVNAT (and SVC_NAMES, plus room for the
    /// unserved Services).
    pub lb: u32,
    /// SVC4_CT (two entries per flow).
    pub ct: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes {
            lb: svc_common::DEFAULT_LB_MAP_MAX,
            ct: CT4_MAP_SIZE,
        }
    }
}

impl MapSizes {
    /// The max_entries `spec`'s map gets.
    pub fn max_entries(&self, spec: &MapSpec) -> u32 {
        match spec.name {
            SVC4_MAP | BACKEND4_MAP | REVNAT4_MAP => self.lb,
            NAMES_MAP => self.lb.saturating_add(svc_common::NAMES_UNSERVED_MAX),
            CT4_MAP => self.ct,
            _ => spec.max_entries,
        }
    }
}

/// Checks a pin against `spec`; `max_entries`: what it must hold (None: any size, for
/// readers such as svcctl).
fn check_pin(dir: &Path, spec: &MapSpec, max_entries: Option<u32>) -> Result<(), DataplaneError> {
    let path = dir.join(spec.name);
    if !path.exists() {
        return Ok(());
    }
    let data = MapData::from_pin(&path).map_err(map_err(spec.name))?;
    let info = data.info().map_err(map_err(spec.name))?;
    let mut checks = vec![
        ("key size", info.key_size(), spec.key_size),
        ("value size", info.value_size(), spec.value_size),
    ];
    if let Some(max) = max_entries {
        checks.push(("max entries", info.max_entries(), max));
    }
    for (what, pinned, expected) in checks {
        if pinned != expected {
            return Err(DataplaneError::IncompatiblePin {
                path,
                what,
                pinned,
                expected,
            });
        }
    }
    Ok(())
}

/// Equal sizes do not make equal layouts: the pins must also carry this build's
/// LAYOUT_VERSION in SVC_CONFIG. Pins without SVC_CONFIG come from before the version was
/// recorded. Nothing pinned at all is fine.
fn check_layout(dir: &Path) -> Result<(), DataplaneError> {
    let config = dir.join(CONFIG_MAP);
    if !config.exists() {
        return match MAP_SPECS.iter().find(|s| dir.join(s.name).exists()) {
            Some(_) => Err(DataplaneError::IncompatibleLayout {
                dir: dir.to_path_buf(),
                pinned: None,
            }),
            None => Ok(()),
        };
    }
    let map: Array<MapData, DatapathConfig4> =
        Map::from_map_data(MapData::from_pin(&config).map_err(map_err(CONFIG_MAP))?)
            .and_then(|m| m.try_into())
            .map_err(map_err(CONFIG_MAP))?;
    let raw = map.get(&0, 0).map_err(map_err(CONFIG_MAP))?;
    // Zero: the map was created but not written yet (an agent stopped while loading).
    if raw.layout_version != svc_common::LAYOUT_VERSION && raw.layout_version != 0 {
        return Err(DataplaneError::IncompatibleLayout {
            dir: dir.to_path_buf(),
            pinned: Some(raw.layout_version),
        });
    }
    Ok(())
}

impl Maps {
    /// Opens the maps a running (or exited) agent pinned under `dir`, checking each
    /// against this build's layout. Used by svcctl; needs no agent process.
    pub fn open_pinned(dir: &Path) -> Result<Maps, DataplaneError> {
        for spec in &MAP_SPECS {
            let path = dir.join(spec.name);
            if !path.exists() {
                return Err(DataplaneError::NotPinned { path });
            }
            check_pin(dir, spec, None)?;
        }
        check_layout(dir)?;
        let open = |name: &'static str| -> Result<Map, DataplaneError> {
            let data = MapData::from_pin(dir.join(name)).map_err(map_err(name))?;
            Map::from_map_data(data).map_err(map_err(name))
        };
        Self::from_maps(open)
    }

    fn from_maps(
        mut take: impl FnMut(&'static str) -> Result<Map, DataplaneError>,
    ) -> Result<Maps, DataplaneError> {
        Ok(Maps {
            services: take(SVC4_MAP)?.try_into().map_err(map_err(SVC4_MAP))?,
            backends: take(BACKEND4_MAP)?
                .try_into()
                .map_err(map_err(BACKEND4_MAP))?,
            revnat: take(REVNAT4_MAP)?
                .try_into()
                .map_err(map_err(REVNAT4_MAP))?,
            ct: take(CT4_MAP)?.try_into().map_err(map_err(CT4_MAP))?,
            affinity: take(AFFINITY4_MAP)?
                .try_into()
                .map_err(map_err(AFFINITY4_MAP))?,
            src_ranges: take(SRC_RANGE4_MAP)?
                .try_into()
                .map_err(map_err(SRC_RANGE4_MAP))?,
            stats: take(STATS_MAP)?.try_into().map_err(map_err(STATS_MAP))?,
            names: take(NAMES_MAP)?.try_into().map_err(map_err(NAMES_MAP))?,
            config: take(CONFIG_MAP)?.try_into().map_err(map_err(CONFIG_MAP))?,
        })
    }

    /// Verdict counters summed over CPUs, in `Verdict::ALL` order.
    pub fn verdict_totals(&self) -> Result<Vec<(Verdict, u64)>, DataplaneError> {
        Verdict::ALL
            .iter()
            .map(|v| {
                let per_cpu = self
                    .stats
                    .get(&(*v as u32), 0)
                    .map_err(map_err(STATS_MAP))?;
                Ok((*v, per_cpu.iter().sum()))
            })
            .collect()
    }
}

/// Node facts the programs read as load-time globals (svc-ebpf/src/config.rs).
#[derive(Debug, Clone, Copy)]
pub struct DatapathConfig {
    /// The cluster's pod CIDR: sources inside it are pods. None: unknown, and ClusterIP
    /// traffic is then never masqueraded.
    pub cluster_cidr: Option<crate::desired::Ipv4Cidr>,
    /// The source address of masqueraded flows (the node's IP). None: never masquerade.
    pub masquerade_addr: Option<std::net::Ipv4Addr>,
    /// Masquerade every translated flow (kube-proxy's --masquerade-all).
    pub masquerade_all: bool,
    /// Source ports of masqueraded flows (inclusive). Keep it apart from the node's
    /// ip_local_port_range and the NodePort range: see svc-ebpf/src/config.rs.
    pub masquerade_ports: (u16, u16),
    /// Capacities of the sizable maps.
    pub map_sizes: MapSizes,
}

/// Above Linux's default ip_local_port_range (32768-60999) and the NodePort range.
pub const DEFAULT_MASQUERADE_PORTS: (u16, u16) = svc_common::MASQUERADE_PORTS;

impl DatapathConfig {
    /// The globals' values, as the programs read them.
    pub fn to_raw(&self) -> DatapathConfig4 {
        let (cidr, mask) = self.cluster_cidr.map_or((0, 0), |c| {
            (
                (u32::from(c.addr) & c.netmask()).to_be(),
                c.netmask().to_be(),
            )
        });
        DatapathConfig4 {
            layout_version: svc_common::LAYOUT_VERSION,
            cluster_cidr_be: cidr,
            cluster_mask_be: mask,
            masq_addr_be: self.masquerade_addr.map_or(0, |a| u32::from(a).to_be()),
            masquerade_all: u32::from(self.masquerade_all),
            nat_port_min: u32::from(self.masquerade_ports.0),
            nat_port_max: u32::from(self.masquerade_ports.1),
            _pad: 0,
        }
    }

    /// Back from the globals' values (SVC_CONFIG) and the maps' capacities.
    pub fn from_raw(raw: &DatapathConfig4, map_sizes: MapSizes) -> DatapathConfig {
        let mask = u32::from_be(raw.cluster_mask_be);
        DatapathConfig {
            cluster_cidr: (mask != 0).then(|| crate::desired::Ipv4Cidr {
                addr: std::net::Ipv4Addr::from(u32::from_be(raw.cluster_cidr_be)),
                prefix_len: mask.count_ones() as u8,
            }),
            masquerade_addr: (raw.masq_addr_be != 0)
                .then(|| std::net::Ipv4Addr::from(u32::from_be(raw.masq_addr_be))),
            masquerade_all: raw.masquerade_all != 0,
            masquerade_ports: (
                u16::try_from(raw.nat_port_min).unwrap_or(DEFAULT_MASQUERADE_PORTS.0),
                u16::try_from(raw.nat_port_max).unwrap_or(DEFAULT_MASQUERADE_PORTS.1),
            ),
            map_sizes,
        }
    }
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            cluster_cidr: None,
            masquerade_addr: None,
            masquerade_all: false,
            masquerade_ports: DEFAULT_MASQUERADE_PORTS,
            map_sizes: MapSizes::default(),
        }
    }
}

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
    links_dir: PathBuf,
    /// Hooks attached or adopted by this agent, by pin name.
    held: BTreeMap<String, Hook>,
}

impl Datapath {
    /// Loads the object with every map pinned under `dir` (reusing compatible pins, so
    /// conntrack and services survive a restart) and loads the programs into the kernel
    /// (not attached yet: see the `attach_*` methods). Returns the datapath and the maps.
    pub fn load(dir: &Path, config: &DatapathConfig) -> Result<(Datapath, Maps), DataplaneError> {
        if EBPF_OBJECT.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        if !is_bpffs(dir) {
            return Err(DataplaneError::NotBpffs {
                dir: dir.to_path_buf(),
            });
        }
        // Refuse an incompatible set before creating anything next to it.
        for spec in &MAP_SPECS {
            check_pin(dir, spec, Some(config.map_sizes.max_entries(spec)))?;
        }
        check_layout(dir)?;
        let links_dir = dir.join(LINKS_SUBDIR);
        std::fs::create_dir_all(&links_dir).map_err(|source| DataplaneError::PinDir {
            dir: links_dir.clone(),
            source,
        })?;
        let raw = config.to_raw();
        let mut loader = EbpfLoader::new();
        for spec in &MAP_SPECS {
            loader.map_max_entries(spec.name, config.map_sizes.max_entries(spec));
        }
        let mut ebpf = loader
            .default_map_pin_directory(dir)
            .override_global("CLUSTER_CIDR_BE", &raw.cluster_cidr_be, true)
            .override_global("CLUSTER_MASK_BE", &raw.cluster_mask_be, true)
            .override_global("MASQ_ADDR_BE", &raw.masq_addr_be, true)
            .override_global("MASQUERADE_ALL", &raw.masquerade_all, true)
            .override_global("NAT_PORT_MIN", &raw.nat_port_min, true)
            .override_global("NAT_PORT_MAX", &raw.nat_port_max, true)
            .load(EBPF_OBJECT)?;
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
        maps.config.set(0, raw, 0).map_err(map_err(CONFIG_MAP))?;
        Ok((
            Datapath {
                ebpf,
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
const CGROUP_PROGS: [&str; 3] = [CONNECT4_PROG, SENDMSG4_PROG, RECVMSG4_PROG];

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

/// What `svc-agent cleanup` removed.
#[derive(Debug, Default)]
pub struct Cleanup {
    pub links: Vec<String>,
    pub maps: Vec<String>,
    /// Files in the directory that are not ours, left alone (the directory stays too).
    pub left: Vec<String>,
}

/// Detaches and unpins everything an agent pinned under `dir`: the links first (so no
/// program runs on maps that are going away), then the maps, then the directories.
/// Run it with the agent stopped (kube-proxy's `--cleanup`). A missing `dir` is nothing
/// to clean.
pub fn cleanup(dir: &Path) -> Result<Cleanup, DataplaneError> {
    let mut out = Cleanup::default();
    if !dir.exists() {
        return Ok(out);
    }
    let rm_err = |path: PathBuf| move |source| DataplaneError::PinDir { dir: path, source };
    let links_dir = dir.join(LINKS_SUBDIR);
    for name in links::pinned_names(&links_dir) {
        let path = links_dir.join(&name);
        std::fs::remove_file(&path).map_err(rm_err(path))?;
        out.links.push(name);
    }
    if links_dir.exists() {
        std::fs::remove_dir(&links_dir).map_err(rm_err(links_dir.clone()))?;
    }
    for name in links::pinned_names(dir) {
        let path = dir.join(&name);
        if MAP_SPECS.iter().any(|s| s.name == name) {
            std::fs::remove_file(&path).map_err(rm_err(path))?;
            out.maps.push(name);
        } else {
            out.left.push(name);
        }
    }
    if out.left.is_empty() {
        std::fs::remove_dir(dir).map_err(rm_err(dir.to_path_buf()))?;
    }
    Ok(out)
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

fn store_err(map: &'static str) -> impl Fn(MapError) -> crate::reconcile::StoreError {
    move |e| {
        use crate::reconcile::StoreError;
        // A full hash map refuses new keys with E2BIG.
        if let MapError::SyscallError(aya::sys::SyscallError { io_error, .. }) = &e
            && io_error.raw_os_error() == Some(libc::E2BIG)
        {
            return StoreError::Full { map };
        }
        StoreError::Other {
            map,
            message: e.to_string(),
        }
    }
}

fn read_all<K: aya::Pod, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<Vec<(K, V)>, crate::reconcile::StoreError> {
    // Keys deleted while we iterate show up as errors of single lookups; skip them.
    let mut out = Vec::new();
    for item in map.iter() {
        match item {
            Ok(kv) => out.push(kv),
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(store_err(name)(e)),
        }
    }
    Ok(out)
}

impl crate::reconcile::MapStore for Maps {
    fn put_service(
        &mut self,
        key: &Svc4Key,
        value: &Svc4Value,
    ) -> Result<(), crate::reconcile::StoreError> {
        self.services
            .insert(key, value, 0)
            .map_err(store_err(SVC4_MAP))
    }
    fn del_service(&mut self, key: &Svc4Key) -> Result<(), crate::reconcile::StoreError> {
        ignore_missing(self.services.remove(key)).map_err(store_err(SVC4_MAP))
    }
    fn put_backend(
        &mut self,
        id: u32,
        value: &Backend4,
    ) -> Result<(), crate::reconcile::StoreError> {
        self.backends
            .insert(id, value, 0)
            .map_err(store_err(BACKEND4_MAP))
    }
    fn del_backend(&mut self, id: u32) -> Result<(), crate::reconcile::StoreError> {
        ignore_missing(self.backends.remove(&id)).map_err(store_err(BACKEND4_MAP))
    }
    fn put_revnat(&mut self, id: u32, value: &RevNat4) -> Result<(), crate::reconcile::StoreError> {
        self.revnat
            .insert(id, value, 0)
            .map_err(store_err(REVNAT4_MAP))
    }
    fn del_revnat(&mut self, id: u32) -> Result<(), crate::reconcile::StoreError> {
        ignore_missing(self.revnat.remove(&id)).map_err(store_err(REVNAT4_MAP))
    }
    fn put_src_range(
        &mut self,
        key: &crate::reconcile::SrcRangeKey,
    ) -> Result<(), crate::reconcile::StoreError> {
        self.src_ranges
            .insert(&LpmKey::new(key.0, key.1), 1, 0)
            .map_err(store_err(SRC_RANGE4_MAP))
    }
    fn del_src_range(
        &mut self,
        key: &crate::reconcile::SrcRangeKey,
    ) -> Result<(), crate::reconcile::StoreError> {
        ignore_missing(self.src_ranges.remove(&LpmKey::new(key.0, key.1)))
            .map_err(store_err(SRC_RANGE4_MAP))
    }
    fn read_src_ranges(
        &self,
    ) -> Result<Vec<crate::reconcile::SrcRangeKey>, crate::reconcile::StoreError> {
        let mut out = Vec::new();
        for key in self.src_ranges.keys() {
            match key {
                Ok(k) => out.push((k.prefix_len(), k.data())),
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(store_err(SRC_RANGE4_MAP)(e)),
            }
        }
        Ok(out)
    }
    fn read_services(&self) -> Result<Vec<(Svc4Key, Svc4Value)>, crate::reconcile::StoreError> {
        read_all(&self.services, SVC4_MAP)
    }
    fn read_backends(&self) -> Result<Vec<(u32, Backend4)>, crate::reconcile::StoreError> {
        read_all(&self.backends, BACKEND4_MAP)
    }
    fn read_revnats(&self) -> Result<Vec<(u32, RevNat4)>, crate::reconcile::StoreError> {
        read_all(&self.revnat, REVNAT4_MAP)
    }
    fn put_name(&mut self, key: u32, value: &SvcName) -> Result<(), crate::reconcile::StoreError> {
        self.names
            .insert(key, value, 0)
            .map_err(store_err(NAMES_MAP))
    }
    fn del_name(&mut self, key: u32) -> Result<(), crate::reconcile::StoreError> {
        ignore_missing(self.names.remove(&key)).map_err(store_err(NAMES_MAP))
    }
    fn read_names(&self) -> Result<Vec<(u32, SvcName)>, crate::reconcile::StoreError> {
        read_all(&self.names, NAMES_MAP)
    }
}

/// Deleting a key that is already gone is success: the map is as we want it.
fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

impl Maps {
    /// The configuration the live programs were loaded with (written by the agent).
    pub fn read_config(&self) -> Result<DatapathConfig, DataplaneError> {
        let raw = self.config.get(&0, 0).map_err(map_err(CONFIG_MAP))?;
        let max = |m: &MapData, name| m.info().map(|i| i.max_entries()).map_err(map_err(name));
        let sizes = MapSizes {
            lb: max(aya::maps::IterableMap::map(&self.services), SVC4_MAP)?,
            ct: max(aya::maps::IterableMap::map(&self.ct), CT4_MAP)?,
        };
        Ok(DatapathConfig::from_raw(&raw, sizes))
    }

    /// Copies the datapath state of `live` into these (fresh) maps: services, backends,
    /// rev-NAT, source ranges, conntrack, affinity and names; not the counters. `live` is
    /// only read. For svcctl trace, which runs a second program instance on the copies.
    pub fn copy_state_from(&mut self, live: &Maps) -> Result<(), crate::reconcile::StoreError> {
        use crate::reconcile::MapStore as _;
        for (k, v) in live.read_services()? {
            self.put_service(&k, &v)?;
        }
        for (k, v) in live.read_backends()? {
            self.put_backend(k, &v)?;
        }
        for (k, v) in live.read_revnats()? {
            self.put_revnat(k, &v)?;
        }
        for k in live.read_src_ranges()? {
            self.put_src_range(&k)?;
        }
        for (k, v) in live.read_names()? {
            self.put_name(k, &v)?;
        }
        for (k, v) in read_all(&live.affinity, AFFINITY4_MAP)? {
            self.affinity
                .insert(k, v, 0)
                .map_err(store_err(AFFINITY4_MAP))?;
        }
        for (k, v) in live.read_conntrack()? {
            self.ct.insert(k, v, 0).map_err(store_err(CT4_MAP))?;
        }
        Ok(())
    }

    /// Every conntrack entry (a snapshot; the LRU map changes under us).
    pub fn read_conntrack(&self) -> Result<Vec<(Ct4Key, Ct4Value)>, crate::reconcile::StoreError> {
        read_all(&self.ct, CT4_MAP)
    }
}

/// How full one map is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapUsage {
    pub name: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

/// Counts the entries of `map` by walking its keys (BPF_MAP_GET_NEXT_KEY with a raw key
/// buffer, so one function serves every key type).
fn count_keys(map: &MapData, key_size: usize, max_entries: u32) -> Result<u64, std::io::Error> {
    use std::os::fd::AsRawFd as _;
    // union bpf_attr, the BPF_MAP_*_ELEM part; BPF_MAP_GET_NEXT_KEY is cmd 4 in
    // include/uapi/linux/bpf.h.
    #[repr(C)]
    struct NextKeyAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        next_key: u64,
    }
    const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
    let fd = map.fd().as_fd().as_raw_fd() as u32;
    let mut key = vec![0u8; key_size];
    let mut next = vec![0u8; key_size];
    let mut count = 0u64;
    let mut first = true;
    // Bounded: an LRU map can change under us, but never holds more than max_entries; twice
    // that many steps means the walk restarted (a deleted key) often enough to stop.
    let bound = 2 * u64::from(max_entries) + 16;
    while count < bound {
        let attr = NextKeyAttr {
            map_fd: fd,
            _pad: 0,
            key: if first { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
        };
        // The attr points at two buffers of the map's key size that outlive the call.
        if let Err(e) = links::sys_bpf(BPF_MAP_GET_NEXT_KEY, &attr) {
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(count);
            }
            return Err(e);
        }
        count += 1;
        first = false;
        std::mem::swap(&mut key, &mut next);
    }
    Ok(count)
}

/// Entries and capacity of every pinned map under `dir` (for metrics). A per-CPU array
/// always holds max_entries entries.
pub fn map_usage(dir: &Path) -> Result<Vec<MapUsage>, DataplaneError> {
    MAP_SPECS
        .iter()
        .map(|spec| {
            let path = dir.join(spec.name);
            if !path.exists() {
                return Err(DataplaneError::NotPinned { path });
            }
            let data = MapData::from_pin(&path).map_err(map_err(spec.name))?;
            // The pinned map's own size: the agent sets some (--lb-map-max, --ct-map-max).
            let capacity = data.info().map_err(map_err(spec.name))?.max_entries();
            let entries = if spec.name == STATS_MAP {
                u64::from(capacity)
            } else {
                count_keys(&data, spec.key_size as usize, capacity).map_err(|e| {
                    DataplaneError::Map {
                        name: spec.name,
                        source: MapError::SyscallError(aya::sys::SyscallError {
                            call: "bpf_map_get_next_key",
                            io_error: e,
                        }),
                    }
                })?
            };
            Ok(MapUsage {
                name: spec.name,
                entries,
                capacity: u64::from(capacity),
            })
        })
        .collect()
}
