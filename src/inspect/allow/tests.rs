//! Unit tests of `inspect/allow.rs`.

use super::*;

#[test]
fn creds_from_status() {
    let status = "Name:\tsh\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n\
                  CapInh:\t0000000000000000\nCapPrm:\t0000000020000420\nCapEff:\t0000000020000420\n\
                  NoNewPrivs:\t1\n";
    let c = Creds::parse(status).unwrap();
    assert_eq!(c.uids, [1000; 4]);
    // runc's defaults for a non-root user (AUDIT_WRITE, KILL, NET_BIND_SERVICE) write nothing.
    assert_eq!(c.could_write_root_files(), None);
    let root = status.replace("Uid:\t1000\t1000\t1000\t1000", "Uid:\t1000\t0\t1000\t0");
    let why = Creds::parse(&root)
        .unwrap()
        .could_write_root_files()
        .unwrap();
    assert!(why.contains("uid 0"), "{why}");
    let capable = status.replace("CapEff:\t0000000020000420", "CapEff:\t0000000000000002");
    let why = Creds::parse(&capable)
        .unwrap()
        .could_write_root_files()
        .unwrap();
    assert!(why.contains("CAP_DAC_OVERRIDE"), "{why}");
    let setuid = status.replace("NoNewPrivs:\t1", "NoNewPrivs:\t0");
    let why = Creds::parse(&setuid)
        .unwrap()
        .could_write_root_files()
        .unwrap();
    assert!(why.contains("no_new_privs"), "{why}");
    assert_eq!(Creds::parse("Name:\tx\n"), None);
}

#[test]
fn auxv_after_argv_and_envp() {
    let words: [u64; 13] = [
        2, 0x100, 0x200, 0, 0x300, 0, 6, 4096, AT_PHDR, 0xaa40, AT_ENTRY, 0xab00, 0,
    ];
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    assert_eq!(stack_auxv(&bytes, Abi::X86_64), Some((0xaa40, 0xab00)));
    let words32: Vec<u8> = [
        1u32, // argc
        0x100, 0, 0, 9, // AT_ENTRY
        0x80, 3, // AT_PHDR
        0x34, 0,
    ]
    .iter()
    .flat_map(|w| w.to_le_bytes())
    .collect();
    assert_eq!(stack_auxv(&words32, Abi::I386), Some((0x34, 0x80)));
    // Cut short, or no NULL after argv: nothing.
    assert_eq!(stack_auxv(&bytes[..40], Abi::X86_64), None);
    let bad: Vec<u8> = [1u64, 0x100, 0x200, 0]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    assert_eq!(stack_auxv(&bad, Abi::X86_64), None);
}

#[test]
fn stack_start_is_field_28() {
    let stat = b"42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 5 1000 100 18446744073709551615 1 1 140737488346112 0 0";
    assert_eq!(stack_start(stat), Some(140_737_488_346_112));
    // The start time, as the exec checkpoint reads it.
    assert_eq!(super::super::proc_stat_field("42 (a) S 1 42", 22), None);
    assert_eq!(
        super::super::proc_stat_field(std::str::from_utf8(stat).unwrap(), 22),
        Some(5)
    );
}

/// A program run by this machine's loader, stopped before its first instruction: the
/// on-stack auxiliary vector names it, not the loader.
#[test]
fn the_main_program_of_a_loader_run_is_found() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    // This test's own loader.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let ld = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/ld-linux-"))
        .expect("this test runs under glibc's loader");
    let mut cmd = std::process::Command::new(ld);
    cmd.args(["/bin/sleep", "30"]);
    let mut child = cmd.process_group(0).spawn().unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let sleep = std::fs::metadata("/bin/sleep").unwrap();
    let found = loop {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let view = FsView::of_task(pid).unwrap();
        // Until the loader has mapped sleep, the stack's vector names the loader.
        if let Ok(Some(key)) = main_program(&view.proc_dir, crate::traps::ABIS[0].abi) {
            if key == (sleep.dev(), sleep.ino()) || std::time::Instant::now() > deadline {
                break key;
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(found, (sleep.dev(), sleep.ino()));
}
