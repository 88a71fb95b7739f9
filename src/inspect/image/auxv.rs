//! What the image checkpoint reads of a process's auxiliary vector: where the interpreter is
//! mapped (`AT_BASE`) and the exec's 16 random bytes (`AT_RANDOM`).

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode as StatMode;

use super::{gone_or, ProcPath};
use crate::inspect::{Abi, InspectError};

/// Bytes of `/proc/PID/auxv` read: about 25 pairs on x86_64 today.
const AUXV_BYTES: usize = 4096;
/// `AT_BASE`: where the program interpreter is mapped (0 without one).
const AT_BASE: u64 = 7;
/// `AT_RANDOM`: the address of 16 random bytes, different for every image.
const AT_RANDOM: u64 = 25;

/// The 16 bytes at `AT_RANDOM` in the image of `tid` (the kernel's random bytes for this exec),
/// when they can be read.
pub(super) fn random_bytes(tid: u32, at: Option<u64>) -> Option<u128> {
    let base = usize::try_from(at?).ok()?;
    let mut bytes = [0u8; 16];
    let remote = [nix::sys::uio::RemoteIoVec {
        base,
        len: bytes.len(),
    }];
    let pid = nix::unistd::Pid::from_raw(i32::try_from(tid).ok()?);
    let n =
        nix::sys::uio::process_vm_readv(pid, &mut [std::io::IoSliceMut::new(&mut bytes)], &remote)
            .ok()?;
    (n == bytes.len()).then(|| u128::from_le_bytes(bytes))
}

/// What the checkpoint reads of the auxiliary vector.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Auxv {
    /// `AT_BASE`: the interpreter's load address (0 without one).
    pub(super) base: u64,
    /// `AT_RANDOM`: unique per exec, so it tells images of one pid apart.
    pub(super) random: Option<u64>,
}

/// Reads the image's auxiliary vector into a stack buffer.
pub(super) fn read_auxv(tid: u32, abi: Abi) -> Result<Auxv, InspectError> {
    let fd = nix::fcntl::open(
        ProcPath::new(tid, format_args!("auxv")).as_bytes(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        StatMode::empty(),
    )
    .map_err(gone_or("auxv"))?;
    let mut buf = [0u8; AUXV_BYTES];
    let mut len = 0;
    // procfs hands over the whole vector in one read; a full buffer means there may be more.
    loop {
        match nix::unistd::read(&fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(gone_or("auxv")(e)),
        }
        if len < buf.len() / 2 || len == buf.len() {
            break;
        }
    }
    Ok(parse_auxv(&buf[..len], abi))
}

pub(super) fn parse_auxv(bytes: &[u8], abi: Abi) -> Auxv {
    let size = abi.pointer_size();
    let mut aux = Auxv::default();
    for pair in bytes.chunks_exact(2 * size) {
        let (key, value) = (abi.word(&pair[..size]), abi.word(&pair[size..]));
        match key {
            AT_BASE => aux.base = value,
            AT_RANDOM => aux.random = Some(value),
            0 => break,
            _ => {}
        }
    }
    aux
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auxv_of_both_pointer_sizes() {
        let mut v64 = Vec::new();
        for (k, v) in [
            (6u64, 4096u64),
            (AT_BASE, 0x7f00_0000_1000),
            (AT_RANDOM, 0x7ffd_0000_0010),
            (0, 0),
        ] {
            v64.extend(k.to_le_bytes());
            v64.extend(v.to_le_bytes());
        }
        assert_eq!(
            parse_auxv(&v64, Abi::X86_64),
            Auxv {
                base: 0x7f00_0000_1000,
                random: Some(0x7ffd_0000_0010)
            }
        );
        let mut v32 = Vec::new();
        for (k, v) in [
            (u32::try_from(AT_RANDOM).unwrap(), 0xffd0_0010u32),
            (0, 0),
            (u32::try_from(AT_BASE).unwrap(), 5),
        ] {
            v32.extend(k.to_le_bytes());
            v32.extend(v.to_le_bytes());
        }
        // Nothing after AT_NULL counts.
        assert_eq!(
            parse_auxv(&v32, Abi::I386),
            Auxv {
                base: 0,
                random: Some(0xffd0_0010)
            }
        );
    }
}
