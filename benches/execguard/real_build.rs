//! Part 3: a real build (zlib's configure and make), unguarded and guarded.

use crate::stats::median;
use crate::stats::median_interval;
use crate::stats::paired_rounds;
use crate::stats::target;
use execguard_testkit::bundle;
use execguard_testkit::Supervisor;
use serde_json::json;
use serde_json::Value;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// zlib's source, fetched once with apt-get source into target/bench.
pub(crate) fn zlib_source() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/src");
    if let Some(found) = find_zlib(&dir) {
        return Some(found);
    }
    std::fs::create_dir_all(&dir).ok()?;
    let sources = Path::new("/etc/apt/sources.list.d/execguard-bench-src.sources");
    if !sources.exists() {
        std::fs::write(
            sources,
            "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        )
        .ok()?;
        Command::new("apt-get")
            .args(["update", "-qq"])
            .status()
            .ok()?;
    }
    let ok = Command::new("apt-get")
        .args(["source", "--download-only", "-qq", "zlib"])
        .current_dir(&dir)
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    let tarball = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(".orig.tar"))?;
    Command::new("tar")
        .arg("xf")
        .arg(&tarball)
        .current_dir(&dir)
        .status()
        .ok()?;
    find_zlib(&dir)
}

pub(crate) fn find_zlib(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.is_dir() && p.join("configure").exists())
}

/// One build of the source in a container; returns its wall time in seconds.
pub(crate) fn build(sup: &Supervisor, src: &Path, name: &str, mode: &str) -> f64 {
    let b = bundle(
        &sup.config,
        name,
        "cd /work/src && ./configure > /dev/null && make -j2 > /dev/null && touch /work/built",
        &[("execguard.io/mode", mode)],
        None,
    );
    // Owned by root (the container's root has no CAP_DAC_OVERRIDE for others' files).
    let ok = Command::new("cp")
        .args(["-r", "--no-preserve=ownership"])
        .arg(src)
        .arg(b.work.join("src"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let started = Instant::now();
    let run = b.run();
    let secs = started.elapsed().as_secs_f64();
    assert!(run.marker("built"), "the build failed: {}", run.describe());
    secs
}

/// Paired rounds of the real build: odd, so that the median is one of them.
pub(crate) const BUILD_ROUNDS: usize = 9;

/// Part 3: zlib's configure and make, unguarded and in enforce mode, `rounds` pairs whose order
/// alternates.
pub(crate) fn real_build(sup: &Supervisor, rounds: usize, out: &mut Value) {
    let Some(src) = zlib_source() else {
        println!("\nreal build: skipped (apt-get source zlib failed)");
        return;
    };
    // The second build of a pair finds the compiler and the sources in the page cache the
    // first warmed.
    let (off, on, ratios) = paired_rounds(
        rounds,
        |r| build(sup, &src, &format!("build-off-{r}"), "off"),
        |r| build(sup, &src, &format!("build-enforce-{r}"), "enforce"),
    );
    let (lo, hi) = median_interval(ratios.clone());
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
    let ratio = median(ratios);
    let (off, on) = (median(off), median(on));
    let name = src.file_name().unwrap().to_string_lossy().into_owned();
    println!(
        "\nreal build: {name}, ./configure && make -j2, {rounds} paired rounds (order alternating)"
    );
    println!("  unguarded {off:.2} s   enforce {on:.2} s   ratio {ratio:.3} (median of paired ratios; 95 % {lo:.3}-{hi:.3})");
    println!("  each round: {}", each.join(" "));
    println!("  target: ratio ≤ 1.02: {}", target(ratio <= 1.02));
    out["real_build"] = json!({"project": name, "rounds": rounds, "unguarded_s": off,
        "enforce_s": on, "ratio": ratio, "ratio_95": [lo, hi]});
}
