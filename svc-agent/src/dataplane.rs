//! The one module that touches the BPF side from userspace: loads the object, pins and
//! adopts maps, attaches programs, and gives typed access to every map. The agent writes
//! through it and svcctl reads through it; names and layouts come from svc-common.
use std::{
    collections::BTreeMap,
    mem::size_of,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, lpm_trie::Key as LpmKey},
    programs::{
        CgroupAttachMode, CgroupSockAddr, ProgramError, SchedClassifier, TcAttachType, Xdp,
        XdpMode, tc::SchedClassifierLinkId, xdp::XdpLinkId,
    },
};
use svc_common::{
    AFFINITY4_MAP, AFFINITY4_MAP_SIZE, Affinity4Key, Affinity4Value, BACKEND4_MAP,
    BACKEND4_MAP_SIZE, Backend4, CONNECT4_PROG, CT4_MAP, CT4_MAP_SIZE, Ct4Key, Ct4Value, NAMES_MAP,
    NAMES_MAP_SIZE, RECVMSG4_PROG, REVNAT4_MAP, REVNAT4_MAP_SIZE, RevNat4, SENDMSG4_PROG,
    SOCK_REVNAT4_MAP, SOCK_REVNAT4_MAP_SIZE, SRC_RANGE4_MAP, SRC_RANGE4_MAP_SIZE, STATS_MAP,
    STATS_MAP_SIZE, SVC4_MAP, SVC4_MAP_SIZE, SockRevNat4Key, SockRevNat4Value, SrcRange4, Svc4Key,
    Svc4Value, SvcName, TC_PROG, Verdict, XDP_PROG,
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
         {expected}); it comes from an incompatible version. Stop the agent and remove the \
         pins (`rm -r {dir}`) to start with empty maps (established flows lose their state).",
        dir = .path.parent().map(|p| p.display().to_string()).unwrap_or_default()
    )]
    IncompatiblePin {
        path: PathBuf,
        what: &'static str,
        pinned: u32,
        expected: u32,
    },
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
    #[error("program {name} on {iface}: {source}")]
    Program {
        name: &'static str,
        iface: String,
        source: ProgramError,
    },
}

/// What each map must look like; checked against existing pins before they are reused,
/// because aya reuses a pin without comparing its attributes (aya #837).
pub struct MapSpec {
    pub name: &'static str,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

pub const MAP_SPECS: [MapSpec; 9] = [
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

fn check_pin(dir: &Path, spec: &MapSpec) -> Result<(), DataplaneError> {
    let path = dir.join(spec.name);
    if !path.exists() {
        return Ok(());
    }
    let data = MapData::from_pin(&path).map_err(map_err(spec.name))?;
    let info = data.info().map_err(map_err(spec.name))?;
    for (what, pinned, expected) in [
        ("key size", info.key_size(), spec.key_size),
        ("value size", info.value_size(), spec.value_size),
        ("max entries", info.max_entries(), spec.max_entries),
    ] {
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

impl Maps {
    /// Opens the maps a running (or exited) agent pinned under `dir`, checking each
    /// against this build's layout. Used by svcctl; needs no agent process.
    pub fn open_pinned(dir: &Path) -> Result<Maps, DataplaneError> {
        for spec in &MAP_SPECS {
            let path = dir.join(spec.name);
            if !path.exists() {
                return Err(DataplaneError::NotPinned { path });
            }
            check_pin(dir, spec)?;
        }
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
}

/// Above Linux's default ip_local_port_range (32768-60999) and the NodePort range.
pub const DEFAULT_MASQUERADE_PORTS: (u16, u16) = (61000, 65535);

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            cluster_cidr: None,
            masquerade_addr: None,
            masquerade_all: false,
            masquerade_ports: DEFAULT_MASQUERADE_PORTS,
        }
    }
}

/// The loaded programs and where they are attached. Dropping it detaches them (TCX and
/// XDP links are owned by this process); the pinned maps stay.
pub struct Datapath {
    ebpf: Ebpf,
    tc_links: BTreeMap<String, SchedClassifierLinkId>,
    xdp_links: BTreeMap<String, XdpLinkId>,
}

impl Datapath {
    /// Loads the object with every map pinned under `dir` (reusing compatible pins, so
    /// conntrack and services survive a restart) and loads both programs into the kernel.
    /// Returns the datapath and the typed maps.
    pub fn load(dir: &Path, config: &DatapathConfig) -> Result<(Datapath, Maps), DataplaneError> {
        if EBPF_OBJECT.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        if !is_bpffs(dir) {
            return Err(DataplaneError::NotBpffs {
                dir: dir.to_path_buf(),
            });
        }
        std::fs::create_dir_all(dir).map_err(|source| DataplaneError::PinDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        for spec in &MAP_SPECS {
            check_pin(dir, spec)?;
        }
        let (cidr, mask) = config.cluster_cidr.map_or((0, 0), |c| {
            (
                (u32::from(c.addr) & c.netmask()).to_be(),
                c.netmask().to_be(),
            )
        });
        let masq = config.masquerade_addr.map_or(0, |a| u32::from(a).to_be());
        let masq_all = u32::from(config.masquerade_all);
        let (nat_min, nat_max) = (
            u32::from(config.masquerade_ports.0),
            u32::from(config.masquerade_ports.1),
        );
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(dir)
            .override_global("CLUSTER_CIDR_BE", &cidr, true)
            .override_global("CLUSTER_MASK_BE", &mask, true)
            .override_global("MASQ_ADDR_BE", &masq, true)
            .override_global("MASQUERADE_ALL", &masq_all, true)
            .override_global("NAT_PORT_MIN", &nat_min, true)
            .override_global("NAT_PORT_MAX", &nat_max, true)
            .load(EBPF_OBJECT)?;
        let prog_err = |name: &'static str| {
            move |source| DataplaneError::Program {
                name,
                iface: String::new(),
                source,
            }
        };
        let tc: &mut SchedClassifier = program(&mut ebpf, TC_PROG)?;
        tc.load().map_err(prog_err(TC_PROG))?;
        let xdp: &mut Xdp = program(&mut ebpf, XDP_PROG)?;
        xdp.load().map_err(prog_err(XDP_PROG))?;
        for name in [CONNECT4_PROG, SENDMSG4_PROG, RECVMSG4_PROG] {
            let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            prog.load().map_err(prog_err(name))?;
        }
        let maps = Maps::from_maps(|name| {
            ebpf.take_map(name).ok_or(DataplaneError::Map {
                name,
                source: MapError::InvalidName {
                    name: name.to_string(),
                },
            })
        })?;
        Ok((
            Datapath {
                ebpf,
                tc_links: BTreeMap::new(),
                xdp_links: BTreeMap::new(),
            },
            maps,
        ))
    }

    /// Attaches the TC program to `iface`'s ingress (idempotent).
    pub fn attach_tc(&mut self, iface: &str) -> Result<bool, DataplaneError> {
        if self.tc_links.contains_key(iface) {
            return Ok(false);
        }
        let tc: &mut SchedClassifier = program(&mut self.ebpf, TC_PROG)?;
        let link =
            tc.attach(iface, TcAttachType::Ingress)
                .map_err(|source| DataplaneError::Program {
                    name: TC_PROG,
                    iface: iface.to_string(),
                    source,
                })?;
        self.tc_links.insert(iface.to_string(), link);
        Ok(true)
    }

    /// Attaches the XDP program to `iface` (native mode where the driver has it).
    pub fn attach_xdp(&mut self, iface: &str) -> Result<bool, DataplaneError> {
        if self.xdp_links.contains_key(iface) {
            return Ok(false);
        }
        let xdp: &mut Xdp = program(&mut self.ebpf, XDP_PROG)?;
        let link =
            xdp.attach(iface, XdpMode::Default)
                .map_err(|source| DataplaneError::Program {
                    name: XDP_PROG,
                    iface: iface.to_string(),
                    source,
                })?;
        self.xdp_links.insert(iface.to_string(), link);
        Ok(true)
    }

    /// Attaches the socket-level programs (connect4, sendmsg4, recvmsg4) to the cgroup v2
    /// directory `cgroup`: processes in it (the node's own) reach Services through them.
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<(), DataplaneError> {
        let dir = std::fs::File::open(cgroup).map_err(|source| DataplaneError::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        })?;
        for name in [CONNECT4_PROG, SENDMSG4_PROG, RECVMSG4_PROG] {
            let prog: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            prog.attach(&dir, CgroupAttachMode::Single)
                .map_err(|source| DataplaneError::Program {
                    name,
                    iface: cgroup.display().to_string(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Forgets interfaces that no longer exist (their links went with them).
    pub fn forget_missing(&mut self, present: &dyn Fn(&str) -> bool) {
        self.tc_links.retain(|iface, _| present(iface));
        self.xdp_links.retain(|iface, _| present(iface));
    }

    pub fn tc_interfaces(&self) -> impl Iterator<Item = &str> {
        self.tc_links.keys().map(String::as_str)
    }

    /// The loaded programs, for BPF_PROG_TEST_RUN (tests, svcctl trace, benchmarks).
    pub fn tc_program(&mut self) -> Result<&mut SchedClassifier, DataplaneError> {
        program(&mut self.ebpf, TC_PROG)
    }

    pub fn xdp_program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        program(&mut self.ebpf, XDP_PROG)
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DataplaneError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(DataplaneError::Program {
        name,
        iface: String::new(),
        source: ProgramError::InvalidName {
            name: name.to_string(),
        },
    })?;
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
    /// Every conntrack entry (a snapshot; the LRU map changes under us).
    pub fn read_conntrack(&self) -> Result<Vec<(Ct4Key, Ct4Value)>, crate::reconcile::StoreError> {
        read_all(&self.ct, CT4_MAP)
    }
}
