//! Unit tests of `inspect/file.rs`.

/// A program linked with `--audit` and `--depaudit` names its audit modules; `/bin/true`
/// and anything that is not an ELF name none. Needs gcc; skips without it.
#[test]
fn audit_tags_are_found_in_the_dynamic_section() {
    assert!(!names_audit_modules(&b"#!/bin/sh\n"[..]).unwrap());
    let tru = std::fs::File::open("/bin/true").unwrap();
    assert!(!names_audit_modules(&tru).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("p.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    for flag in ["-Wl,--audit=/x.so", "-Wl,--depaudit=/x.so", "-m32"] {
        let out = dir.path().join("p");
        let mut cmd = std::process::Command::new("gcc");
        cmd.arg(flag);
        if flag == "-m32" {
            cmd.arg("-Wl,--audit=/x.so");
        }
        let Ok(status) = cmd.arg("-o").arg(&out).arg(&src).status() else {
            eprintln!("skipped: no gcc");
            return;
        };
        assert!(status.success(), "gcc {flag}");
        let f = std::fs::File::open(&out).unwrap();
        assert!(names_audit_modules(&f).unwrap(), "{flag}");
    }
}
use super::*;

fn kind_of(path: &str) -> FileKind {
    classify(&std::fs::File::open(path).unwrap()).unwrap()
}

/// The file mapped into this test process whose name starts with `prefix`: the libraries
/// the test itself runs with, wherever this distribution keeps them.
fn mapped(prefix: &str) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            std::path::Path::new(p)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no {prefix}* mapped in the test process"))
        .to_owned()
}

/// `/bin/true`'s `PT_INTERP`, as this distribution builds it.
fn interp_of_true() -> Vec<u8> {
    match kind_of("/bin/true") {
        FileKind::Dynamic { interp } => interp,
        other => panic!("/bin/true is {other:?}"),
    }
}

#[test]
fn system_loaders_are_loaders() {
    let interp = String::from_utf8(interp_of_true()).unwrap();
    assert_eq!(kind_of(&interp), FileKind::Loader(LoaderKind::Glibc));
    assert_eq!(
        kind_of(&mapped("ld-linux")),
        FileKind::Loader(LoaderKind::Glibc)
    );
}

#[test]
fn optional_loaders_when_installed() {
    // musl-tools and libc6-i386 (scripts/deps.sh) install them; without them the test says
    // so, and under the project's test command (EXECGUARD_TEST_STRICT) it fails.
    for (path, kind) in [
        ("/lib/ld-musl-x86_64.so.1", LoaderKind::Musl),
        ("/lib/ld-linux.so.2", LoaderKind::Glibc),
    ] {
        if !std::path::Path::new(path).exists() {
            assert!(
                std::env::var_os("EXECGUARD_TEST_STRICT").is_none(),
                "{path} is missing: run scripts/deps.sh"
            );
            eprintln!("skipped {path}: not installed (scripts/deps.sh installs it)");
            continue;
        }
        assert_eq!(kind_of(path), FileKind::Loader(kind), "{path}");
    }
}

#[test]
fn renamed_copy_is_still_a_loader() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("innocent.txt");
    std::fs::copy(crate::inspect::TEST_LOADER, &copy).unwrap();
    assert_eq!(
        classify(&std::fs::File::open(&copy).unwrap()).unwrap(),
        FileKind::Loader(LoaderKind::Glibc)
    );
}

#[test]
fn libc_and_executables_are_not_loaders() {
    // glibc's libc.so.6 is runnable (it has a PT_INTERP); libm is a plain library.
    assert!(matches!(
        kind_of(&mapped("libc.so")),
        FileKind::Dynamic { .. }
    ));
    // Rust's standard library links libgcc_s: a library with no interpreter.
    assert_eq!(kind_of(&mapped("libgcc_s")), FileKind::OtherElf);
    assert!(interp_of_true().starts_with(b"/"));
    assert_eq!(kind_of("/etc/passwd"), FileKind::Other);
}

#[test]
fn shebang_lines_parse_like_the_kernel() {
    let s = parse_shebang(b"#! /lib64/ld.so  /bin/touch  x \nrest").unwrap();
    assert_eq!(s.interpreter, b"/lib64/ld.so");
    assert_eq!(s.arg.as_deref(), Some(&b"/bin/touch  x"[..]));
    let s = parse_shebang(b"#!/bin/sh\n").unwrap();
    assert_eq!(s.arg, None);
    assert_eq!(parse_shebang(b"#!\n"), None);
    assert_eq!(parse_shebang(b"#!   \n"), None);
    // No newline and the name may continue past the buffer: ENOEXEC.
    assert_eq!(parse_shebang(b"#!/bin/sh"), None);
    assert!(parse_shebang(b"#!/bin/sh -e").is_some());
}

#[test]
fn hostile_headers_do_not_panic() {
    let mut elf = std::fs::read("/bin/true").unwrap();
    elf.truncate(200);
    for i in 0..elf.len() {
        let mut m = elf.clone();
        m[i] ^= 0xff;
        // Unguarded: a parser panic fails the test.
        let _ = parse_loader_kind(&m);
        let _ = ElfLayout::parse(&m);
        let _ = classify(&m[..]);
    }
    assert_eq!(parse_loader_kind(b"\x7fELF"), None);
    assert_eq!(parse_loader_kind(b""), None);
}
