//! Unit tests of `inspect/image.rs`.

use super::*;

/// The interpreter of a running dynamic program, found from its auxiliary vector and its
/// mapping, is this machine's loader.
#[test]
fn the_interpreter_of_a_running_program_is_found_by_its_mapping() {
    let mut child = std::process::Command::new("/bin/sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the image is sleep's, not the forked test binary's.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| !p.ends_with("sleep"))
        .unwrap_or(true)
    {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    let aux = read_auxv(pid, crate::traps::ABIS[0].abi).unwrap();
    assert_ne!(aux.base, 0);
    assert!(aux.random.is_some());
    let maps = open_maps(pid).unwrap();
    let m = mapping_at(&maps, aux.base).unwrap().unwrap();
    let ld = std::fs::metadata(crate::inspect::TEST_LOADER).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(m.key, (ld.dev(), ld.ino()));
    let _ = child.kill();
    let _ = child.wait();
}
