//! What a person reads when a command fails: the error chain once (no cause repeated), and,
//! when the kernel said EPERM or EACCES, the privilege this process lacks.
//!
//! Our own errors put the cause in `source()`, not in their text, so a chain printed link by
//! link says everything once. Some errors from libraries also print their cause in their
//! own text (aya's `EbpfError::MapError` is "map error: {0}" and has it as source too), so
//! [`chain_text`] leaves out a link that the link before it already said.
//!
//! A permission error only gets a hint when this process really lacks something the task
//! needs (by its effective uid and capabilities): as root with every capability, EPERM comes
//! from elsewhere (a seccomp profile, an LSM) and naming a capability would mislead.
use std::{error::Error, io};

/// Joins `err` and its sources with ": ", leaving out a source whose text the link before it
/// already contains.
pub fn chain_text(err: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    // Bounded: a chain is a handful of links; a cycle would be a bug elsewhere.
    for _ in 0..32 {
        let Some(e) = current else { break };
        let text = e.to_string();
        let said = parts.last().is_some_and(|prev| prev.contains(&text));
        if !text.is_empty() && !said {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// True if some link of the chain is an OS error EPERM or EACCES.
pub fn permission_denied<'a>(chain: impl IntoIterator<Item = &'a (dyn Error + 'static)>) -> bool {
    chain.into_iter().take(32).any(|e| {
        e.downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
            .is_some_and(|n| n == libc::EPERM || n == libc::EACCES)
    })
}

/// What the failed command was doing, which decides what it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// `svc-agent`: creates maps, loads and attaches programs, pins them.
    Agent,
    /// `svc-agent cleanup`: removes root's pins.
    Cleanup,
    /// `svcctl dump` / `stats`: opens root's pins and reads the maps.
    Read,
    /// `svcctl trace`: reads the pins, and loads a second instance of the programs.
    Trace,
}

// Capability numbers (include/uapi/linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What this process is allowed: its effective uid and capability set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Privileges {
    pub euid: u32,
    /// CapEff of /proc/self/status: bit n is capability n.
    pub cap_eff: u64,
}

impl Privileges {
    /// This process's, from /proc/self/status; None if it cannot be read.
    pub fn current() -> Option<Privileges> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        Privileges::parse(&status)
    }

    /// From the text of /proc/<pid>/status (`Uid:` real, effective, ...; `CapEff:` hex).
    pub fn parse(status: &str) -> Option<Privileges> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let euid = field("Uid:")?.split_whitespace().nth(1)?.parse().ok()?;
        let cap_eff = u64::from_str_radix(field("CapEff:")?, 16).ok()?;
        Some(Privileges { euid, cap_eff })
    }

    fn has(&self, cap: u32) -> bool {
        self.cap_eff & (1 << cap) != 0
    }

    /// What `task` needs that this process lacks, as words for people. The pins and the
    /// bpffs directory belong to root (mode 0600 / 0755), so every task needs uid 0; the
    /// kernel counts CAP_SYS_ADMIN for CAP_BPF and CAP_PERFMON (bpf_capable(),
    /// perfmon_capable()).
    pub fn missing(&self, task: Task) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.euid != 0 {
            out.push("root (uid 0)");
        }
        if matches!(task, Task::Agent | Task::Trace) {
            let sys_admin = self.has(CAP_SYS_ADMIN);
            if !self.has(CAP_BPF) && !sys_admin {
                out.push("CAP_BPF");
            }
            if !self.has(CAP_NET_ADMIN) {
                out.push("CAP_NET_ADMIN");
            }
            if !self.has(CAP_PERFMON) && !sys_admin {
                out.push("CAP_PERFMON");
            }
        }
        out
    }
}

/// What `task` needs, in one sentence (the deploy manifest grants exactly this).
fn needs(task: Task) -> &'static str {
    match task {
        Task::Agent => {
            "svc-agent needs root: uid 0 with CAP_BPF (maps, programs), CAP_NET_ADMIN \
             (networking programs, attaching them) and CAP_PERFMON (without it the verifier \
             rejects the packet parsing), as deploy/base/svc-agent.yaml grants them; CAP_SYS_ADMIN \
             also counts for CAP_BPF and CAP_PERFMON"
        }
        Task::Cleanup => {
            "svc-agent cleanup needs root (uid 0): the pins and their directory belong to root"
        }
        Task::Read => {
            "svcctl needs root (uid 0): the pins belong to root and only root may open them"
        }
        Task::Trace => {
            "svcctl trace needs root: uid 0 with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (it \
             loads a copy of the programs); CAP_SYS_ADMIN also counts for CAP_BPF and \
             CAP_PERFMON"
        }
    }
}

/// The hint for a failure of `task` whose chain says EPERM/EACCES, when `privileges` lack
/// something the task needs: what it needs, and what this process lacks.
pub fn privilege_hint_for(task: Task, privileges: Privileges) -> Option<String> {
    let missing = privileges.missing(task);
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "{}; this process runs as uid {} and lacks {}",
        needs(task),
        privileges.euid,
        missing.join(", ")
    ))
}

/// [`privilege_hint_for`] this process, if `chain` is a permission error.
pub fn privilege_hint<'a>(
    task: Task,
    chain: impl IntoIterator<Item = &'a (dyn Error + 'static)>,
) -> Option<String> {
    if !permission_denied(chain) {
        return None;
    }
    privilege_hint_for(task, Privileges::current()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("map error: {0}")]
    struct SaysItsSource(#[source] io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("map SVC4_CT")]
    struct Context(#[source] SaysItsSource);

    #[test]
    fn a_cause_already_in_the_text_is_said_once() {
        let err = Context(SaysItsSource(io::Error::from_raw_os_error(libc::EPERM)));
        let text = chain_text(&err);
        assert_eq!(
            text,
            format!(
                "map SVC4_CT: map error: {}",
                io::Error::from_raw_os_error(1)
            )
        );
        assert_eq!(text.matches("os error 1").count(), 1, "{text}");
        // A permission error anywhere in the chain is found.
        let mut chain: Vec<&(dyn Error + 'static)> = vec![&err];
        chain.push(&err.0);
        chain.push(&err.0.0);
        assert!(permission_denied(chain));
        let other = io::Error::from_raw_os_error(libc::ENOENT);
        assert!(!permission_denied([&other as &(dyn Error + 'static)]));
    }

    const ROOT: &str = "Name:\tsvcctl\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n";

    #[test]
    fn privileges_are_read_from_proc_status() {
        let root = Privileges::parse(ROOT).unwrap();
        assert_eq!(root.euid, 0);
        assert!(root.missing(Task::Agent).is_empty());
        assert!(
            privilege_hint_for(Task::Agent, root).is_none(),
            "root lacks nothing"
        );

        let nobody =
            Privileges::parse("Uid:\t65534\t65534\t65534\t65534\nCapEff:\t0000000000000000\n")
                .unwrap();
        assert_eq!(
            nobody.missing(Task::Agent),
            ["root (uid 0)", "CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"]
        );
        assert_eq!(nobody.missing(Task::Read), ["root (uid 0)"]);
        let hint = privilege_hint_for(Task::Agent, nobody).unwrap();
        for want in [
            "CAP_BPF",
            "CAP_NET_ADMIN",
            "CAP_PERFMON",
            "uid 65534",
            "lacks",
        ] {
            assert!(hint.contains(want), "{want:?} in {hint}");
        }

        // The DaemonSet's set: uid 0, BPF + NET_ADMIN + PERFMON.
        let daemonset = Privileges {
            euid: 0,
            cap_eff: 1 << CAP_BPF | 1 << CAP_NET_ADMIN | 1 << CAP_PERFMON,
        };
        assert!(daemonset.missing(Task::Agent).is_empty());
        // CAP_SYS_ADMIN stands in for BPF and PERFMON, not for NET_ADMIN.
        let sys_admin = Privileges {
            euid: 0,
            cap_eff: 1 << CAP_SYS_ADMIN,
        };
        assert_eq!(sys_admin.missing(Task::Trace), ["CAP_NET_ADMIN"]);
        assert!(sys_admin.missing(Task::Cleanup).is_empty());
        assert_eq!(Privileges::parse("Name: x\n"), None);
    }
}
