//! One agent per bpffs directory: [`BpffsLock`] is an exclusive `flock(2)` on the pin
//! directory itself, which the agent holds for its whole life and `svc-agent cleanup` takes
//! before it unpins anything.
//!
//! Two agents on one directory would both adopt the pinned maps and fight over them (each
//! reconciling against its own mirror, each swapping its programs into the links), and a
//! cleanup under a running agent leaves it serving maps nobody can see any more. flock on
//! the directory (opened O_RDONLY|O_DIRECTORY) needs no extra file next to the pins, works on
//! bpffs like on any filesystem, and is released by the kernel when the holder's last
//! descriptor closes, which includes SIGKILL and crashes: a restarted agent never finds a
//! stale lock. The holder's pid is read from /proc/locks (the kernel lists every flock with
//! the pid that took it and the device:inode it is on), only to say who holds it.
//!
//! Readers (svcctl) take no lock: they never write a map or a pin.
use std::{
    fs::File,
    io,
    os::{
        fd::AsRawFd,
        unix::fs::{
            DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
        },
    },
    path::{Path, PathBuf},
};

use super::DataplaneError;

/// An exclusive lock on a pin directory, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct BpffsLock {
    dir: PathBuf,
    /// The locked directory, open for the lock's lifetime (close-on-exec, so a child never
    /// inherits it).
    _file: File,
}

/// Why [`try_lock_dir`] did not get the lock.
#[derive(Debug)]
pub(super) enum LockFailure {
    /// Another open file description holds it; the pid that took it, when /proc/locks names
    /// one.
    Held { holder: Option<u32> },
    /// Opening or locking the directory failed.
    Io(io::Error),
}

impl BpffsLock {
    /// Locks `dir` for an agent: checks that it is on a bpffs, creates it if needed, and
    /// takes the lock without waiting. Another holder is [`DataplaneError::Locked`] with its
    /// pid.
    pub fn acquire(dir: &Path) -> Result<BpffsLock, DataplaneError> {
        super::loader::check_bpffs(dir)?;
        // Mode 0700: only root can open the directory, so no other user can take (and
        // hold) the lock, nor list the pins (which are root's, mode 0600, anyway).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| DataplaneError::PinDir {
                dir: dir.to_path_buf(),
                source,
            })?;
        // A directory made by an older agent, or by hand, may be open to others. A failure
        // here leaves the lock working for root, so it is not an error.
        if let Ok(meta) = std::fs::metadata(dir)
            && meta.permissions().mode() & 0o077 != 0
        {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        match try_lock_dir(dir) {
            Ok(lock) => Ok(lock),
            Err(LockFailure::Held { holder }) => Err(DataplaneError::Locked {
                dir: dir.to_path_buf(),
                holder,
            }),
            Err(LockFailure::Io(source)) => Err(DataplaneError::Open {
                path: dir.to_path_buf(),
                source,
            }),
        }
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Opens `dir` and takes an exclusive flock on it without waiting.
pub(super) fn try_lock_dir(dir: &Path) -> Result<BpffsLock, LockFailure> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .map_err(LockFailure::Io)?;
    // SAFETY: flock(2) on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(BpffsLock {
            dir: dir.to_path_buf(),
            _file: file,
        });
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(LockFailure::Io(err));
    }
    let holder = file.metadata().ok().and_then(|m| {
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        flock_holder(&locks, m.dev(), m.ino())
    });
    Err(LockFailure::Held { holder })
}

/// The pid holding a FLOCK on the file `dev`/`ino`, from the text of /proc/locks:
/// `1: FLOCK  ADVISORY  WRITE 4242 00:1f:5678 0 EOF` (the device as hex major:minor, the
/// inode in decimal; waiters are marked `->` and skipped).
pub(super) fn flock_holder(proc_locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let want = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    proc_locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, file, ..] if *file == want => pid.parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "svc-agent-lock-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = TempDir::new("second");
        let first = try_lock_dir(&dir.0).expect("first lock");
        // flock conflicts between open file descriptions, also within one process.
        match try_lock_dir(&dir.0) {
            Err(LockFailure::Held { holder }) => {
                assert_eq!(holder, Some(std::process::id()), "the holder is us")
            }
            other => panic!("second lock: {other:?}"),
        }
        drop(first);
        let again = try_lock_dir(&dir.0).expect("free again once dropped");
        assert_eq!(again.dir(), dir.0);
    }

    #[test]
    fn a_missing_directory_is_an_io_error() {
        let dir = TempDir::new("missing");
        match try_lock_dir(&dir.0.join("nope")) {
            Err(LockFailure::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn proc_locks_lines_are_matched_by_device_and_inode() {
        let text = "\
1: POSIX  ADVISORY  WRITE 100 00:1f:77 0 EOF
2: FLOCK  ADVISORY  WRITE 200 00:1f:78 0 EOF
2: -> FLOCK  ADVISORY  WRITE 300 00:1f:77 0 EOF
3: FLOCK  ADVISORY  WRITE 400 fe:00:77 0 EOF
4: FLOCK  ADVISORY  WRITE 500 00:1f:77 0 EOF
";
        let dev = libc::makedev(0, 0x1f);
        // Not the POSIX lock, not the waiter, not the same inode on another device.
        assert_eq!(flock_holder(text, dev, 77), Some(500));
        assert_eq!(flock_holder(text, dev, 78), Some(200));
        assert_eq!(flock_holder(text, dev, 79), None);
        assert_eq!(flock_holder(text, libc::makedev(0xfe, 0), 77), Some(400));
        assert_eq!(flock_holder("", dev, 77), None);
    }
}
