//! What the inspection remembers: the container's own loaders (by device and inode) and what
//! each file version was found to be, so that a version seen before is not read again.

use std::collections::HashMap;

use super::file::{self, FileKind, LoaderKind};
use super::resolve::{self, FsView};
use super::SYSTEM_LOADER_PATHS;

/// The loaders a container's root holds at the standard paths, by (device, inode).
#[derive(Clone, Debug, Default)]
pub(crate) struct SystemLoaders {
    by_key: HashMap<(u64, u64), LoaderKind>,
}

impl SystemLoaders {
    /// Finds the loaders of the root that `view` sees.
    pub(crate) fn discover(view: &FsView, extra: &[String]) -> Self {
        let mut by_key = HashMap::new();
        let paths = SYSTEM_LOADER_PATHS
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str));
        for path in paths {
            let Ok(start) = view.start_dir(None) else {
                continue;
            };
            let Ok(found) = resolve::resolve(view, start, b"/", path.as_bytes(), true) else {
                continue;
            };
            if !found.is_regular() {
                continue;
            }
            if let Ok(FileKind::Loader(kind)) = resolve::open_for_read(&found)
                .map(|f| file::classify(&f))
                .unwrap_or(Ok(FileKind::Other))
            {
                by_key.insert(found.key(), kind);
            }
        }
        Self { by_key }
    }

    pub(crate) fn kind_of(&self, key: (u64, u64)) -> Option<LoaderKind> {
        self.by_key.get(&key).copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

/// Identity of a file version: a rewrite changes the change time, and the size most often.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileVersion {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) size: i64,
    /// Modification time, seconds and nanoseconds.
    pub(crate) mtime: (i64, i64),
    /// Change time (any write or metadata change, which a writer cannot set back).
    pub(crate) ctime: (i64, i64),
}

pub(crate) fn version_of(st: &nix::sys::stat::FileStat) -> FileVersion {
    FileVersion {
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size,
        mtime: (st.st_mtime, st.st_mtime_nsec),
        ctime: (st.st_ctime, st.st_ctime_nsec),
    }
}

/// What each file is, by file version, so that an exec of a file seen before costs no read.
/// Files changed less than two seconds ago are not cached: a rewrite within one timestamp tick
/// would otherwise go unseen.
#[derive(Default)]
pub(crate) struct FileCache {
    kinds: HashMap<FileVersion, FileKind>,
    /// Device and inode of mappings found to be one of the container's loaders, where the
    /// mapping names the file differently from `stat` (an overlay's layer).
    mapped_loaders: std::collections::HashSet<(u64, u64)>,
    /// sha256 of programs that `[[allow]]` rules with `sha256` were checked against.
    digests: HashMap<FileVersion, [u8; 32]>,
}

/// Entries kept before the cache is emptied.
const FILE_CACHE_ENTRIES: usize = 4096;
const FILE_CACHE_MIN_AGE_SECS: i64 = 2;

impl FileCache {
    pub(crate) fn get(&self, v: &FileVersion) -> Option<&FileKind> {
        self.kinds.get(v)
    }

    /// The kind of file version `v`: from the cache, or from `classify` (then remembered).
    pub(crate) fn get_or_classify<E>(
        &mut self,
        v: FileVersion,
        classify: impl FnOnce() -> Result<FileKind, E>,
    ) -> Result<FileKind, E> {
        if let Some(kind) = self.kinds.get(&v) {
            return Ok(kind.clone());
        }
        let kind = classify()?;
        self.put(v, &kind);
        Ok(kind)
    }

    fn put(&mut self, v: FileVersion, kind: &FileKind) {
        if !settled(&v) {
            return;
        }
        if self.kinds.len() >= FILE_CACHE_ENTRIES {
            self.kinds.clear();
        }
        self.kinds.insert(v, kind.clone());
    }

    /// The sha256 of file version `v`: from the cache, or from `hash` (then remembered).
    pub(crate) fn sha256_of<E>(
        &mut self,
        v: FileVersion,
        hash: impl FnOnce() -> Result<[u8; 32], E>,
    ) -> Result<[u8; 32], E> {
        if let Some(d) = self.digests.get(&v) {
            return Ok(*d);
        }
        let d = hash()?;
        if settled(&v) {
            if self.digests.len() >= FILE_CACHE_ENTRIES {
                self.digests.clear();
            }
            self.digests.insert(v, d);
        }
        Ok(d)
    }

    /// Whether a mapping with this device and inode was found to be a loader of the container.
    pub(crate) fn is_mapped_loader(&self, key: (u64, u64)) -> bool {
        self.mapped_loaders.contains(&key)
    }

    pub(crate) fn add_mapped_loader(&mut self, key: (u64, u64)) {
        if self.mapped_loaders.len() >= FILE_CACHE_ENTRIES {
            self.mapped_loaders.clear();
        }
        self.mapped_loaders.insert(key);
    }
}

/// Whether a file version is old enough to be cached: a rewrite within one timestamp tick of
/// a younger one would go unseen.
fn settled(v: &FileVersion) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(0);
    now.saturating_sub(v.ctime.0) >= FILE_CACHE_MIN_AGE_SECS
}
