//! Unit tests of `inspect/resolve.rs`.

use super::*;
use std::os::unix::fs::symlink;

struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(r.join("lib64")).unwrap();
        std::fs::create_dir_all(r.join("work/sub")).unwrap();
        std::fs::write(r.join("lib/x86_64-linux-gnu/ld.so"), b"x").unwrap();
        symlink(
            "/lib/x86_64-linux-gnu/ld.so",
            r.join("lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        symlink("../lib64", r.join("work/rel")).unwrap();
        symlink("/../../../../etc", r.join("work/escape")).unwrap();
        symlink("loop2", r.join("work/loop1")).unwrap();
        symlink("loop1", r.join("work/loop2")).unwrap();
        Self { dir }
    }

    fn view(&self, cwd: &str) -> FsView {
        let root = nix::fcntl::open(
            self.dir.path(),
            o_path(OFlag::O_DIRECTORY),
            StatMode::empty(),
        )
        .unwrap();
        let cwd = nix::fcntl::open(
            &self.dir.path().join(cwd),
            o_path(OFlag::O_DIRECTORY),
            StatMode::empty(),
        )
        .unwrap();
        let view = FsView::new(open_path("/proc/self", OFlag::O_DIRECTORY).unwrap());
        let _ = view.root.set(root);
        let _ = view.cwd.set(cwd);
        view
    }

    /// The one-syscall lookup, where it answers; the walk, where it does not.
    fn fast(&self, path: &str) -> Option<Result<(u64, u64), Errno>> {
        let v = self.view("work");
        resolve_absolute_fast(&v, path.as_bytes(), true).map(|r| r.map(|r| r.key()))
    }

    fn slow_key(&self, path: &str) -> Result<(u64, u64), Errno> {
        let v = self.view("work");
        let start = v.start_dir(None).unwrap();
        resolve(&v, start, b"/work", path.as_bytes(), true).map(|r| r.key())
    }

    fn resolve(&self, cwd: &str, path: &str) -> Result<String, Errno> {
        let v = self.view(cwd);
        let start = v.start_dir(None).unwrap();
        let disp = format!("/{cwd}");
        resolve(&v, start, disp.as_bytes(), path.as_bytes(), true)
            .map(|r| String::from_utf8(r.display).unwrap())
    }
}

#[test]
fn absolute_symlinks_stay_in_the_root() {
    let t = Tree::new();
    assert_eq!(
        t.resolve("work", "/lib64/ld-linux-x86-64.so.2").unwrap(),
        "/lib/x86_64-linux-gnu/ld.so"
    );
    assert_eq!(
        t.resolve("work", "//lib64/./../lib64//ld-linux-x86-64.so.2")
            .unwrap(),
        "/lib/x86_64-linux-gnu/ld.so"
    );
}

#[test]
fn relative_paths_start_at_the_cwd() {
    let t = Tree::new();
    assert_eq!(
        t.resolve("work", "rel/ld-linux-x86-64.so.2").unwrap(),
        "/lib/x86_64-linux-gnu/ld.so"
    );
    assert_eq!(
        t.resolve("work/sub", "../../lib64/ld-linux-x86-64.so.2")
            .unwrap(),
        "/lib/x86_64-linux-gnu/ld.so"
    );
}

#[test]
fn dotdot_never_leaves_the_root() {
    let t = Tree::new();
    // The host's /etc has passwd; the tree's root has no etc at all.
    assert_eq!(
        t.resolve("work", "../../../../etc/passwd"),
        Err(Errno::ENOENT)
    );
    assert_eq!(t.resolve("work", "escape/passwd"), Err(Errno::ENOENT));
}

#[test]
fn loops_and_missing_files_give_the_kernels_errno() {
    let t = Tree::new();
    assert_eq!(t.resolve("work", "loop1"), Err(Errno::ELOOP));
    assert_eq!(t.resolve("work", "nope"), Err(Errno::ENOENT));
    assert_eq!(
        t.resolve("work", "/lib/x86_64-linux-gnu/ld.so/x"),
        Err(Errno::ENOTDIR)
    );
    assert_eq!(t.resolve("work", ""), Err(Errno::ENOENT));
    let long = "a/".repeat(3000);
    assert_eq!(t.resolve("work", &long), Err(Errno::ENAMETOOLONG));
}

#[test]
fn fast_lookup_agrees_with_the_walk() {
    let t = Tree::new();
    for path in [
        "/lib64/ld-linux-x86-64.so.2",
        "//lib64/./../lib64//ld-linux-x86-64.so.2",
    ] {
        let fast = t.fast(path).expect("absolute paths take the fast lookup");
        assert_eq!(fast, t.slow_key(path), "{path}");
    }
    // Failures hand over to the walk, which decides.
    for path in [
        "/work/loop1",
        "/nope",
        "/lib/x86_64-linux-gnu/ld.so/x",
        "/work/escape/passwd",
    ] {
        assert!(t.fast(path).is_none(), "{path}");
        assert!(t.slow_key(path).is_err(), "{path}");
    }
    assert!(t.fast("rel/ld-linux-x86-64.so.2").is_none());
}

#[test]
fn proc_self_fd_means_the_target() {
    // With this process as the target, /proc/self/fd/N is our own fd N.
    let f = std::fs::File::open("/proc/self/exe").unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let v = FsView::of_self().unwrap();
    let start = v.start_dir(None).unwrap();
    let r = resolve(
        &v,
        start,
        b"/",
        format!("/proc/self/fd/{fd}").as_bytes(),
        true,
    )
    .unwrap();
    let exe = std::fs::metadata("/proc/self/exe").unwrap();
    assert_eq!(
        r.key(),
        (
            std::os::unix::fs::MetadataExt::dev(&exe),
            std::os::unix::fs::MetadataExt::ino(&exe)
        )
    );
}
