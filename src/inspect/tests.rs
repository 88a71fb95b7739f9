//! Unit tests of `inspect/mod.rs`.

use super::*;

fn explain(argv: &[&str], env: LoaderEnv) -> Inspection {
    let view = FsView::of_self().unwrap();
    let loaders = SystemLoaders::discover(&view, &[]);
    let req = ExecRequest {
        syscall: Syscall::Execve,
        abi: Abi::X86_64,
        path: argv[0].as_bytes().to_vec(),
        dirfd: None,
        flags: 0,
    };
    let mut args = GivenArgs {
        argv: Argv {
            items: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            truncated: false,
        },
        env,
    };
    inspect(
        &req,
        &view,
        &mut args,
        &loaders,
        &mut FileCache::default(),
        &mut PhaseClock::start(),
    )
    .unwrap()
}

#[test]
fn the_host_has_its_loader() {
    let view = FsView::of_self().unwrap();
    assert!(SystemLoaders::discover(&view, &[]).len() > 0);
}

#[test]
fn ordinary_exec_has_no_finding() {
    assert!(explain(&["/bin/true"], LoaderEnv::default())
        .finding
        .is_none());
    assert!(explain(&["/bin/sh", "-c", "true"], LoaderEnv::default())
        .finding
        .is_none());
}

/// The loader's path with `..` and `.` in it: `/lib64/../lib64/./ld-linux-x86-64.so.2`.
fn dotted_loader() -> String {
    let (dir, name) = TEST_LOADER.rsplit_once('/').unwrap();
    format!("{dir}/..{dir}/./{name}")
}

#[test]
fn loader_running_a_program_is_critical_rule() {
    let i = explain(&[&dotted_loader(), "/bin/touch", "x"], LoaderEnv::default());
    let f = i.finding.unwrap();
    assert_eq!(f.rule, Rule::BinaryExecutedByLoader);
    let l = f.loader.unwrap();
    assert_eq!(l.invocation.program.as_deref(), Some(&b"/bin/touch"[..]));
    assert_eq!(l.kind, LoaderKind::Glibc);
}

#[test]
fn ldd_is_a_query() {
    let i = explain(
        &[TEST_LOADER, "/bin/true"],
        LoaderEnv {
            trace: true,
            audit: false,
        },
    );
    assert_eq!(i.finding.unwrap().rule, Rule::LoaderQuery);
}

#[test]
fn script_naming_the_loader() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s");
    std::fs::write(&script, format!("#!{TEST_LOADER} /bin/touch\n")).unwrap();
    let i = explain(&[script.to_str().unwrap(), "x"], LoaderEnv::default());
    let f = i.finding.unwrap();
    assert_eq!(f.rule, Rule::BinaryExecutedByLoader);
    let l = f.loader.unwrap();
    assert_eq!(l.via, Via::Shebang);
    assert_eq!(l.invocation.program.as_deref(), Some(&b"/bin/touch"[..]));
}

#[test]
fn custom_interpreter_is_found() {
    // The copy's path replaces the interpreter string in place, so it must be shorter than
    // it: a directory under /tmp (whatever TMPDIR says) keeps it short.
    let dir = tempfile::Builder::new()
        .prefix("i")
        .tempdir_in("/tmp")
        .unwrap();
    let ld = dir.path().join("l");
    std::fs::copy(TEST_LOADER, &ld).unwrap();
    let bin = dir.path().join("prog");
    let mut bytes = std::fs::read("/bin/true").unwrap();
    let old = format!("{TEST_LOADER}\0");
    let old = old.as_bytes();
    let pos = bytes.windows(old.len()).position(|w| w == old).unwrap();
    let new = ld.to_str().unwrap();
    assert!(
        new.len() < old.len(),
        "{new} does not fit in place of {old:?}"
    );
    bytes[pos..pos + new.len()].copy_from_slice(new.as_bytes());
    bytes[pos + new.len()] = 0;
    std::fs::write(&bin, &bytes).unwrap();
    let i = explain(&[bin.to_str().unwrap()], LoaderEnv::default());
    let f = i.finding.unwrap();
    assert_eq!(f.rule, Rule::CustomInterpreter);
    assert_eq!(f.loader.unwrap().kind, LoaderKind::Glibc);
}
