//! An nginx backend in a pod namespace: one process answering `200 ok` on every path.
//!
//! The benchmark's backends, as in shared/notes/bench-baselines.md: nginx with one worker and
//! `return 200`. Here that worker is the only process (`master_process off`): it serves exactly
//! as a single worker would, and nothing can be left orphaned when it is stopped. Config, pid
//! file, logs and temp paths live in a per-run directory `$TMPDIR/svb-<pid>-<n>-nginx`,
//! removed on drop; nothing is written anywhere else. nginx is started as a child process
//! inside the namespace (entered before exec, keeping the caller's mount namespace, so the
//! directory is visible) and stopped on drop (SIGTERM, then SIGKILL after 3 s).
//!
//! The lab's backend pods already run the echo servers on 8080, so in a `svc_lab::Lab` pod use
//! another port (e.g. [`LAB_PORT`]).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// nginx's port where nothing else is listening.
pub const DEFAULT_PORT: u16 = 8080;
/// A port free in the lab's pods (8080 is the echo servers').
pub const LAB_PORT: u16 = 8081;
/// How long [`Nginx::start`] waits for the port to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server answers on every path.
pub const BODY: &[u8] = b"ok\n";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The configuration for a server on `port` whose files all live under `dir`.
pub fn config(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "# svc-bench backend: a single process (its own worker), `return 200` on every path.
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 65536;
events {{
    worker_connections 16384;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type text/plain;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    server {{
        listen {port} backlog=4096;
        location / {{
            return 200 \"ok\\n\";
        }}
    }}
}}
"
    )
}

/// A running nginx; stopped and its directory removed on drop.
#[derive(Debug)]
pub struct Nginx {
    child: Option<Child>,
    dir: PathBuf,
    ns: String,
    port: u16,
}

impl Nginx {
    /// Start nginx in network namespace `ns` listening on `0.0.0.0:port`, and wait (at most
    /// [`START_TIMEOUT`]) until it answers a `GET /` with 200 on 127.0.0.1 in `ns`.
    pub fn start(ns: &str, port: u16) -> anyhow::Result<Nginx> {
        let mut cmd = Command::new(crate::program("nginx"));
        svc_lab::netns::command_in_netns(&mut cmd, ns)?;
        Nginx::start_with(cmd, ns, port)
    }

    /// [`start`](Self::start) with `cmd` as the nginx command, already set to run in `ns`
    /// (e.g. a pod's process in its cgroup, `svc_lab::Lab::pod_command`); this adds the
    /// arguments and the output.
    pub fn start_with(mut cmd: Command, ns: &str, port: u16) -> anyhow::Result<Nginx> {
        cleanup_stale_dirs();
        let dir = make_run_dir()?;
        let mut me = Nginx {
            child: None,
            dir,
            ns: ns.to_string(),
            port,
        };
        // From here on, Drop removes the directory (and stops nginx), also on error.
        let conf = me.dir.join("nginx.conf");
        std::fs::write(&conf, config(&me.dir, port))
            .with_context(|| format!("writing {}", conf.display()))?;
        let log = std::fs::File::create(me.dir.join("stderr.log"))?;
        cmd.arg("-p")
            .arg(&me.dir)
            .arg("-c")
            .arg(&conf)
            // The startup error log, before the config's error_log applies (nginx >= 1.19.5).
            .arg("-e")
            .arg(me.dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::NotFound {
                " (not installed? `cargo xtask setup` installs nginx)"
            } else {
                ""
            };
            anyhow::anyhow!("spawning nginx in {ns}: {e}{hint}")
        })?;
        me.child = Some(child);
        me.wait_ready()?;
        Ok(me)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "nginx in {} exited at start ({status}): {}",
                    self.ns,
                    self.logs().trim()
                );
            }
            // Only our own answer counts: another server may hold the port (nginx then
            // retries bind() for a few seconds and exits, which the check above reports).
            let answer = crate::load::http_get(&self.ns, local);
            if let Ok((200, body)) = &answer
                && body == BODY
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let seen = match answer {
                    Ok((status, body)) => format!(
                        "something else answers: {status} {:?}",
                        String::from_utf8_lossy(&body)
                    ),
                    Err(e) => format!("{e:#}"),
                };
                bail!(
                    "nginx in {} not answering on :{} after {START_TIMEOUT:?} ({seen}); log: {}",
                    self.ns,
                    self.port,
                    self.logs().trim()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The per-run directory (config, logs, temp paths).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// nginx's error log and stderr, for messages.
    pub fn logs(&self) -> String {
        ["error.log", "stderr.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.join(f)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM, wait up to 3 s, then SIGKILL; reaped. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            eprintln!("svc-bench: removing {}: {e}", self.dir.display());
        }
    }
}

const DIR_PREFIX: &str = "svb-";
const DIR_SUFFIX: &str = "-nginx";

fn make_run_dir() -> anyhow::Result<PathBuf> {
    let tmp = std::env::temp_dir();
    for _ in 0..100 {
        let dir = tmp.join(format!(
            "{DIR_PREFIX}{}-{}{DIR_SUFFIX}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("no free nginx run directory under {}", tmp.display())
}

/// Remove `svb-<pid>-<n>-nginx` directories of processes that are gone.
fn cleanup_stale_dirs() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(DIR_PREFIX)
            .filter(|r| r.ends_with(DIR_SUFFIX))
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_everything_in_the_run_dir() {
        let c = config(Path::new("/tmp/svb-1-0-nginx"), 8081);
        assert!(c.contains("daemon off;"));
        assert!(c.contains("master_process off;"));
        assert!(c.contains("worker_processes 1;"));
        assert!(c.contains("listen 8081 backlog=4096;"));
        assert!(c.contains("return 200 \"ok\\n\";"));
        assert!(c.contains("access_log off;"));
        // Every absolute path is inside the run dir.
        for word in c
            .split_whitespace()
            .filter(|w| w.starts_with('/') && w.len() > 1)
        {
            assert!(
                word.starts_with("/tmp/svb-1-0-nginx/"),
                "{word} escapes the run dir"
            );
        }
        for p in [
            "pid",
            "error_log",
            "client_body_temp_path",
            "proxy_temp_path",
            "fastcgi_temp_path",
            "uwsgi_temp_path",
            "scgi_temp_path",
        ] {
            assert!(c.contains(&format!("{p} /tmp/svb-1-0-nginx/")), "{p}");
        }
    }
}
