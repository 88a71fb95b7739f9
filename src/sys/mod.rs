//! The only module with `unsafe`: the seccomp user-notification ioctls ([`seccomp`]), asking
//! the kernel about another process ([`process`]: pidfds, `PROCMAP_QUERY`, `NS_GET_PARENT`),
//! the slot file's shared mapping ([`shm`]), taking ownership of file descriptors received
//! over a socket or inherited ([`fds`]), and the exec record's map value and BPF links
//! ([`bpf`]). Everything else goes through `nix`'s safe wrappers.
//!
//! Every `unsafe` block has a `// SAFETY:` note, and each ioctl number is a `const` pinned to the
//! kernel's headers by a test here.

// The crate root denies `unsafe`; this module, and only it, is where it is written.
#![allow(unsafe_code)]

pub(crate) mod bpf;
pub(crate) mod fds;
pub(crate) mod process;
pub(crate) mod seccomp;
pub(crate) mod shm;

pub(crate) use fds::{adopt_inherited_fd, inheritable_copy, recv_with_fds};
pub(crate) use process::{exit_now, fork_single_threaded, pid_ns_parent, write_nowait, PidFd};
pub use process::{procmap_query, Mapping};
pub(crate) use seccomp::{empty_notif, SeccompData, SeccompNotif};
/// What the benchmark's null responder needs to answer notifications like the supervisor.
pub use seccomp::{NotifyFd, SeccompNotifResp, SECCOMP_USER_NOTIF_FLAG_CONTINUE};
pub(crate) use shm::{ReadOnlyWords, SharedWords};

#[cfg(test)]
mod tests {
    use super::process::{self, NS_GET_PARENT, PROCMAP_QUERY};
    use super::seccomp::{
        SECCOMP_IOCTL_NOTIF_ID_VALID, SECCOMP_IOCTL_NOTIF_RECV, SECCOMP_IOCTL_NOTIF_SEND,
        SECCOMP_IOCTL_NOTIF_SET_FLAGS,
    };
    use std::io::Write;
    use std::process::Command;

    /// Pins the ioctl numbers to the ones the C headers give, compiled here with the system's
    /// compiler; SET_FLAGS and PROCMAP_QUERY are newer than Debian 12's headers, so they are
    /// built from the same macros (PROCMAP_QUERY with the structure as Linux 6.11 defines it).
    #[test]
    // A C compiler for the machine the tests run on: not in the arm64 VM (the numbers are
    // encoded the same way there, asm-generic's _IOWR).
    #[cfg_attr(
        not(target_arch = "x86_64"),
        ignore = "needs a C compiler on the test machine"
    )]
    fn ioctl_numbers_match_the_kernel_headers() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("n.c");
        let bin = dir.path().join("n");
        let mut f = std::fs::File::create(&src).unwrap();
        writeln!(
            f,
            r#"#include <stdio.h>
#include <sys/ioctl.h>
#include <linux/seccomp.h>
#include <linux/nsfs.h>
#include <linux/types.h>
struct procmap_query {{ __u64 size, query_flags, query_addr, vma_start, vma_end, vma_flags,
  vma_page_size, vma_offset, inode; __u32 dev_major, dev_minor, vma_name_size, build_id_size;
  __u64 vma_name_addr, build_id_addr; }};
int main(void) {{
  printf("%lx %lx %lx %lx %lx %zu %lx\n", (unsigned long)SECCOMP_IOCTL_NOTIF_RECV,
         (unsigned long)SECCOMP_IOCTL_NOTIF_SEND, (unsigned long)SECCOMP_IOCTL_NOTIF_ID_VALID,
         (unsigned long)SECCOMP_IOW(4, __u64),
         (unsigned long)_IOWR('f', 17, struct procmap_query), sizeof(struct procmap_query),
         (unsigned long)NS_GET_PARENT);
  return 0;
}}"#
        )
        .unwrap();
        let cc = Command::new("cc")
            .arg(&src)
            .arg("-o")
            .arg(&bin)
            .status()
            .expect("a C compiler (cc) is needed to pin the ioctl numbers");
        assert!(cc.success());
        let out = Command::new(&bin).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let expected = format!(
            "{:x} {:x} {:x} {:x} {:x} {} {:x}\n",
            SECCOMP_IOCTL_NOTIF_RECV,
            SECCOMP_IOCTL_NOTIF_SEND,
            SECCOMP_IOCTL_NOTIF_ID_VALID,
            SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            PROCMAP_QUERY,
            std::mem::size_of::<process::ProcmapQuery>(),
            NS_GET_PARENT
        );
        assert_eq!(text, expected);
    }
}
