//! `BPF_MAP_UPDATE_BATCH`: many entries of one map in one `bpf()` call.
//!
//! aya 0.14 has no batch operations, so this is the one raw syscall of the agent. Installing
//! 100k Services writes 1.1 M SVC4_SERVICES entries; one syscall each spent about half of
//! the write time on the syscall itself (entry, attribute copy, a key and value buffer
//! allocated per call), measured with perf in the 100k programming bench.
//!
//! The kernel (`generic_map_update_batch`, since 5.6) writes the entries in order, one
//! after another, exactly as single updates would, and stops at the first that fails,
//! reporting how many it wrote: the reconciler's write order (slots before the slot-0
//! entry that counts them) holds inside a batch as it does across calls.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use bytemuck::Pod;

/// `union bpf_attr`'s `batch` member (include/uapi/linux/bpf.h). The kernel reads
/// `size_of::<BatchAttr>()` bytes and treats the rest of the union as zero.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Cleared when the kernel refuses batch operations (before 5.6): a property of the kernel,
/// so of the whole process.
static SUPPORTED: AtomicBool = AtomicBool::new(true);

/// False once a batch call was refused as unknown.
pub fn supported() -> bool {
    SUPPORTED.load(Ordering::Relaxed)
}

/// Records that this kernel has no batch operations: callers write one entry per call.
pub fn mark_unsupported() {
    SUPPORTED.store(false, Ordering::Relaxed);
}

/// A batch update that stopped early: `written` entries (a prefix) are in the map.
#[derive(Debug)]
pub struct BatchFailed {
    pub written: usize,
    pub error: std::io::Error,
}

/// Writes `keys[i] -> values[i]` in order with `BPF_MAP_UPDATE_BATCH` (flags `BPF_ANY`).
/// The key and value types must be the map's key and value (their sizes are checked by
/// the kernel: a mismatch fails with EINVAL before anything is written).
pub fn update_batch<K: Pod, V: Pod>(
    map: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> Result<(), BatchFailed> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    if keys.is_empty() {
        return Ok(());
    }
    let count = u32::try_from(keys.len()).map_err(|_| BatchFailed {
        written: 0,
        error: std::io::Error::from_raw_os_error(libc::E2BIG),
    })?;
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: map.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix for this command; the kernel reads
    // `count` keys and values from the two slices, which outlive the call, and writes
    // back only `attr.count`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    // The kernel reports the entries it wrote in `count`, except when it failed before
    // looking at any (bad attributes): then `count` is what we passed.
    let written = if attr.count < count {
        attr.count as usize
    } else {
        0
    };
    Err(BatchFailed { written, error })
}
