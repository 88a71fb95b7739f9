//! What an exec'd file is, decided by its content, never its name: an ELF with or without a
//! program interpreter, a dynamic loader (glibc or musl, any name, any copy), a `#!` script, or
//! something else. Every read is bounded; hostile headers give errors, not panics.

use std::os::unix::fs::FileExt;

use goblin::elf::header::{ELFMAG, ET_DYN, SELFMAG};
use goblin::elf::program_header::{PT_DYNAMIC, PT_INTERP, PT_LOAD};

/// Bytes read from the start of every exec'd file: the ELF header and, nearly always, the
/// program headers, or a `#!` line (the kernel reads 256 bytes for it).
const HEAD_BYTES: usize = 4096;
/// The kernel refuses program-header tables larger than this (`ELF_MIN_ALIGN`).
const MAX_PHDR_BYTES: usize = 4096;
/// The kernel's cap on a shebang line (`BINPRM_BUF_SIZE`).
const SHEBANG_BYTES: usize = 256;
/// A loader candidate is read whole to look at its dynamic symbols; loaders are ~200 KiB to
/// ~1 MiB, so a larger candidate is judged by its structure alone.
const MAX_LOADER_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("reading {what}: {source}")]
    Read {
        what: &'static str,
        source: std::io::Error,
    },
}

/// Which loader implementation a file is; decides how its arguments are parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoaderKind {
    Glibc,
    Musl,
}

impl LoaderKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LoaderKind::Glibc => "glibc",
            LoaderKind::Musl => "musl",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// An ELF that names a program interpreter (an ordinary dynamic executable).
    Dynamic { interp: Vec<u8> },
    /// An ELF dynamic loader.
    Loader(LoaderKind),
    /// Any other ELF (static, static-pie, a shared library).
    OtherElf,
    /// A `#!` script.
    Script(Shebang),
    /// Anything else (the kernel decides whether it runs at all).
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shebang {
    pub interpreter: Vec<u8>,
    /// Linux passes everything after the interpreter as one argument.
    pub arg: Option<Vec<u8>>,
}

/// Something to classify: an open file, or bytes in memory (tests and fuzzing).
pub trait Source {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;
    fn size(&self) -> std::io::Result<u64>;
}

impl Source for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl Source for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }
}

/// Classifies a file by its content.
pub fn classify<S: Source + ?Sized>(file: &S) -> Result<FileKind, FileError> {
    let mut head = vec![0u8; HEAD_BYTES];
    let n = read_at(file, &mut head, 0, "file header")?;
    head.truncate(n);
    if head.starts_with(b"#!") {
        return Ok(parse_shebang(&head[..n.min(SHEBANG_BYTES)])
            .map(FileKind::Script)
            .unwrap_or(FileKind::Other));
    }
    if head.len() < SELFMAG || &head[..SELFMAG] != ELFMAG {
        return Ok(FileKind::Other);
    }
    classify_elf(file, &head)
}

fn classify_elf<S: Source + ?Sized>(file: &S, head: &[u8]) -> Result<FileKind, FileError> {
    let Some(layout) = ElfLayout::parse(head) else {
        return Ok(FileKind::Other);
    };
    let phdr_bytes = layout.phentsize.saturating_mul(layout.phnum);
    if phdr_bytes == 0 || phdr_bytes > MAX_PHDR_BYTES || layout.phentsize < layout.min_phentsize() {
        return Ok(FileKind::Other);
    }
    let mut phdrs = vec![0u8; phdr_bytes];
    let n = read_at(file, &mut phdrs, layout.phoff, "program headers")?;
    if n < phdr_bytes {
        return Ok(FileKind::Other);
    }
    let mut interp = None;
    let mut dynamic = false;
    for i in 0..layout.phnum {
        let ph = &phdrs[i * layout.phentsize..(i + 1) * layout.phentsize];
        let (p_type, p_offset, p_filesz) = layout.phdr(ph);
        if p_type == PT_INTERP && interp.is_none() {
            // The kernel refuses interpreters longer than PATH_MAX or shorter than 2 bytes.
            let len = match usize::try_from(p_filesz) {
                Ok(len @ 2..=4096) => len,
                _ => return Ok(FileKind::Other),
            };
            let mut name = vec![0u8; len];
            let n = read_at(file, &mut name, p_offset, "PT_INTERP")?;
            name.truncate(n);
            if let Some(nul) = name.iter().position(|b| *b == 0) {
                name.truncate(nul);
            }
            interp = Some(name);
        } else if p_type == PT_DYNAMIC {
            dynamic = true;
        }
    }
    if let Some(interp) = interp {
        return Ok(FileKind::Dynamic { interp });
    }
    if layout.e_type != ET_DYN || !dynamic {
        return Ok(FileKind::OtherElf);
    }
    Ok(match loader_kind(file)? {
        Some(kind) => FileKind::Loader(kind),
        None => FileKind::OtherElf,
    })
}

/// Whether a glibc loader reads its options as glibc did before 2.33: it has none of 2.33's
/// query options (their help text names `--list-tunables`), so an option it does not know is
/// the name of the program it runs. Judged by content, for the exec checkpoint; the image
/// checkpoint needs no such guess (a loader that reached it did not stop to answer a query).
pub fn glibc_before_2_33<S: Source + ?Sized>(file: &S) -> Result<bool, FileError> {
    let len = file.size().map_err(|source| FileError::Read {
        what: "file size",
        source,
    })?;
    let mut bytes = vec![0u8; usize::try_from(len.min(MAX_LOADER_BYTES)).unwrap_or(0)];
    let n = read_at(file, &mut bytes, 0, "loader")?;
    let marker: &[u8] = b"--list-tunables";
    Ok(!bytes[..n].windows(marker.len()).any(|w| w == marker))
}

/// `DT_AUDIT` and `DT_DEPAUDIT`: audit modules a program names for the loader that loads it.
const DT_AUDIT: u64 = 0x6fff_fefc;
const DT_DEPAUDIT: u64 = 0x6fff_fefb;
/// Bytes of a dynamic section read at most (thousands of entries; a larger one is answered
/// as naming audit modules).
const MAX_DYNAMIC_BYTES: u64 = 256 * 1024;

/// Whether an ELF program names audit modules (`DT_AUDIT`, `DT_DEPAUDIT` in its dynamic
/// section): glibc's loader loads them, and runs their code, whatever it was asked to do with
/// the program (also `ldd`'s listing). The dynamic section is found where the loader finds it,
/// at `PT_DYNAMIC`'s address inside a `PT_LOAD` segment (not at its file offset, which a decoy
/// can fill). An ELF whose headers or dynamic section cannot be read whole within the bounds
/// is answered yes (in doubt); anything that is not an ELF names none.
pub fn names_audit_modules<S: Source + ?Sized>(file: &S) -> Result<bool, FileError> {
    let mut head = vec![0u8; HEAD_BYTES];
    let n = read_at(file, &mut head, 0, "file header")?;
    head.truncate(n);
    if head.len() < SELFMAG || &head[..SELFMAG] != ELFMAG {
        return Ok(false);
    }
    let Some(layout) = ElfLayout::parse(&head) else {
        return Ok(true);
    };
    let phdr_bytes = layout.phentsize.saturating_mul(layout.phnum);
    if phdr_bytes > MAX_PHDR_BYTES || layout.phentsize < layout.min_phentsize() {
        return Ok(true);
    }
    let mut phdrs = vec![0u8; phdr_bytes];
    if read_at(file, &mut phdrs, layout.phoff, "program headers")? < phdr_bytes {
        return Ok(true);
    }
    let headers: Vec<&[u8]> = phdrs.chunks_exact(layout.phentsize).collect();
    let r = Reader {
        little: layout.little,
    };
    let entry = if layout.is64 { 16 } else { 8 };
    for ph in &headers {
        let (p_type, _, p_filesz) = layout.phdr(ph);
        if p_type != PT_DYNAMIC {
            continue;
        }
        let vaddr = layout.vaddr(ph);
        // The file offset of that address, through the PT_LOAD that maps it.
        let offset = headers.iter().find_map(|load| {
            let (t, off, filesz) = layout.phdr(load);
            let start = layout.vaddr(load);
            (t == PT_LOAD && vaddr >= start && vaddr - start < filesz)
                .then(|| off.checked_add(vaddr - start))
                .flatten()
        });
        let Some(offset) = offset else {
            return Ok(true);
        };
        if p_filesz > MAX_DYNAMIC_BYTES {
            return Ok(true);
        }
        let len = usize::try_from(p_filesz).unwrap_or(0);
        let mut dynamic = vec![0u8; len];
        let n = read_at(file, &mut dynamic, offset, "dynamic section")?;
        if n < len {
            return Ok(true);
        }
        for e in dynamic.chunks_exact(entry) {
            let tag = if layout.is64 {
                r.u64(e, 0)
            } else {
                r.u32(e, 0).map(u64::from)
            };
            match tag {
                Some(DT_AUDIT | DT_DEPAUDIT) => return Ok(true),
                Some(0) | None => break,
                _ => {}
            }
        }
    }
    Ok(false)
}

/// An `ET_DYN` with a dynamic section and no interpreter is a loader, a static-pie program or
/// a shared library. A loader is the one that *defines* `__tls_get_addr` (glibc's ld.so and
/// musl's libc.so both do; glibc's libc.so.6 and static-pie programs do not), or carries a
/// loader's soname. Renaming, copying or stripping the file leaves both in place, and a loader
/// without the symbol could not serve the programs it loads.
fn loader_kind<S: Source + ?Sized>(file: &S) -> Result<Option<LoaderKind>, FileError> {
    let len = file.size().map_err(|source| FileError::Read {
        what: "file size",
        source,
    })?;
    let cap = len.min(MAX_LOADER_BYTES) as usize;
    let mut bytes = vec![0u8; cap];
    let n = read_at(file, &mut bytes, 0, "loader candidate")?;
    bytes.truncate(n);
    Ok(loader_kind_of_bytes(&bytes))
}

/// The content test of [`loader_kind`], on bytes in memory.
pub(crate) fn loader_kind_of_bytes(bytes: &[u8]) -> Option<LoaderKind> {
    // goblin is robust on hostile input, but a parser bug must never take the supervisor down.
    // The fuzzer and the tests call `parse_loader_kind` itself, so that such a bug shows.
    std::panic::catch_unwind(|| parse_loader_kind(bytes)).unwrap_or(None)
}

/// [`loader_kind_of_bytes`] without the panic guard: the fuzz entry point.
pub fn parse_loader_kind(bytes: &[u8]) -> Option<LoaderKind> {
    {
        let elf = goblin::elf::Elf::parse(bytes).ok()?;
        if elf.interpreter.is_some() || elf.header.e_type != ET_DYN {
            return None;
        }
        let soname = elf.soname.unwrap_or("");
        let glibc = soname.starts_with("ld-linux")
            || elf
                .verdef
                .as_ref()
                .map(|vd| {
                    vd.iter().any(|d| {
                        d.iter().any(|aux| {
                            elf.dynstrtab
                                .get_at(aux.vda_name)
                                .unwrap_or("")
                                .starts_with("GLIBC_")
                        })
                    })
                })
                .unwrap_or(false);
        let defines_tls_get_addr = elf.dynsyms.iter().any(|s| {
            s.st_shndx != 0
                && matches!(
                    elf.dynstrtab.get_at(s.st_name),
                    Some("__tls_get_addr") | Some("___tls_get_addr")
                )
        });
        let musl_soname = soname.starts_with("ld-musl") || soname == "libc.so";
        if defines_tls_get_addr || soname.starts_with("ld-linux") || musl_soname {
            Some(if glibc {
                LoaderKind::Glibc
            } else {
                LoaderKind::Musl
            })
        } else {
            None
        }
    }
}

/// The parts of the ELF header this module needs, for both classes and both byte orders.
struct ElfLayout {
    is64: bool,
    little: bool,
    e_type: u16,
    phoff: u64,
    phentsize: usize,
    phnum: usize,
}

impl ElfLayout {
    fn parse(h: &[u8]) -> Option<Self> {
        let is64 = match h.get(4)? {
            1 => false,
            2 => true,
            _ => return None,
        };
        let little = match h.get(5)? {
            1 => true,
            2 => false,
            _ => return None,
        };
        let r = Reader { little };
        let e_type = r.u16(h, 16)?;
        let (phoff, phentsize, phnum) = if is64 {
            (r.u64(h, 32)?, r.u16(h, 54)?, r.u16(h, 56)?)
        } else {
            (u64::from(r.u32(h, 28)?), r.u16(h, 42)?, r.u16(h, 44)?)
        };
        Some(Self {
            is64,
            little,
            e_type,
            phoff,
            phentsize: usize::from(phentsize),
            phnum: usize::from(phnum),
        })
    }

    fn min_phentsize(&self) -> usize {
        if self.is64 {
            56
        } else {
            32
        }
    }

    /// (p_type, p_offset, p_filesz) of one program header.
    /// `p_vaddr` of one program header.
    fn vaddr(&self, ph: &[u8]) -> u64 {
        let r = Reader {
            little: self.little,
        };
        if self.is64 {
            r.u64(ph, 16).unwrap_or(0)
        } else {
            u64::from(r.u32(ph, 8).unwrap_or(0))
        }
    }

    fn phdr(&self, ph: &[u8]) -> (u32, u64, u64) {
        let r = Reader {
            little: self.little,
        };
        if self.is64 {
            (
                r.u32(ph, 0).unwrap_or(0),
                r.u64(ph, 8).unwrap_or(0),
                r.u64(ph, 32).unwrap_or(0),
            )
        } else {
            (
                r.u32(ph, 0).unwrap_or(0),
                u64::from(r.u32(ph, 4).unwrap_or(0)),
                u64::from(r.u32(ph, 16).unwrap_or(0)),
            )
        }
    }
}

struct Reader {
    little: bool,
}

impl Reader {
    fn bytes<const N: usize>(&self, b: &[u8], at: usize) -> Option<[u8; N]> {
        b.get(at..at.checked_add(N)?)?.try_into().ok()
    }
    fn u16(&self, b: &[u8], at: usize) -> Option<u16> {
        let a = self.bytes::<2>(b, at)?;
        Some(if self.little {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        })
    }
    fn u32(&self, b: &[u8], at: usize) -> Option<u32> {
        let a = self.bytes::<4>(b, at)?;
        Some(if self.little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    }
    fn u64(&self, b: &[u8], at: usize) -> Option<u64> {
        let a = self.bytes::<8>(b, at)?;
        Some(if self.little {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        })
    }
}

/// Parses a `#!` line the way Linux's binfmt_script does: leading blanks skipped, the
/// interpreter up to the next blank, the rest (trimmed) as one optional argument.
pub fn parse_shebang(buf: &[u8]) -> Option<Shebang> {
    let rest = buf.strip_prefix(b"#!")?;
    let line_end = rest.iter().position(|b| *b == b'\n');
    // Without a newline in the buffer, the kernel still accepts the line if the interpreter
    // name ends inside it; a name that may run past the buffer is refused (ENOEXEC).
    let line = &rest[..line_end.unwrap_or(rest.len())];
    let line = trim_end(line);
    let start = line.iter().position(|b| !is_blank(*b))?;
    let line = &line[start..];
    let name_end = line.iter().position(|b| is_blank(*b)).unwrap_or(line.len());
    if line_end.is_none() && name_end == line.len() {
        return None;
    }
    let interpreter = line[..name_end].to_vec();
    let arg = line[name_end..]
        .iter()
        .position(|b| !is_blank(*b))
        .map(|s| line[name_end + s..].to_vec());
    Some(Shebang { interpreter, arg })
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let Some((last, rest)) = s.split_last() {
        if is_blank(*last) || *last == 0 || *last == b'\r' {
            s = rest;
        } else {
            break;
        }
    }
    s
}

fn read_at<S: Source + ?Sized>(
    file: &S,
    buf: &mut [u8],
    offset: u64,
    what: &'static str,
) -> Result<usize, FileError> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(FileError::Read { what, source }),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests;
