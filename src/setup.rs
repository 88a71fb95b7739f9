//! `execguard setup podman|containerd|crio [--dry-run]`: writes (or, with `--dry-run`, shows)
//! the configuration each engine needs, keeping what its files already say.
//!
//! - podman: a containers.conf drop-in whose `hooks_dir` is every hooks directory podman
//!   already uses (containers.conf files are merged key by key, so a drop-in's list replaces
//!   the others') plus execguard's own, and the hook JSON there;
//! - containerd: the `execguard` runtime handler (runc shim, `BinaryName` = execguard-runtime,
//!   `execguard.io/*` annotations let through) added to `/etc/containerd/config.toml`, edited
//!   in place with every other line, comment and table kept;
//! - CRI-O: a drop-in with the `execguard` runtime handler.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::vocab::Mode;
use toml_edit::{value, Array, DocumentMut, Item, Table};

/// The engines `setup` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Podman,
    Containerd,
    Crio,
    Docker,
}

impl Engine {
    /// What makes the engine use what `setup` wrote.
    pub(crate) fn next_step(self) -> &'static str {
        match self {
            Engine::Podman => "podman reads its hooks at every container start: nothing to restart",
            Engine::Containerd => {
                "restart containerd (systemctl restart containerd); running containers keep running"
            }
            Engine::Crio => "restart CRI-O (systemctl restart crio)",
            Engine::Docker => {
                "dockerd reads its runtimes again on SIGHUP: systemctl reload docker (or \
                 kill -HUP $(pidof dockerd)); running containers keep running. Then: docker run \
                 --runtime execguard (the config's mode), execguard-audit or execguard-enforce"
            }
        }
    }
}

/// Where execguard's binaries and files are (the package's layout by default).
#[derive(Clone, Debug)]
pub struct Layout {
    /// Prefixes every path written or read (tests, image builds); `/` normally.
    pub root: PathBuf,
    pub execguard: PathBuf,
    pub runtime: PathBuf,
    pub config: PathBuf,
    pub hooks_dir: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            execguard: PathBuf::from("/usr/bin/execguard"),
            runtime: PathBuf::from("/usr/bin/execguard-runtime"),
            config: PathBuf::from(crate::config::DEFAULT_CONFIG_PATH),
            hooks_dir: PathBuf::from("/usr/share/execguard/hooks.d"),
        }
    }
}

/// One file `setup` writes: its path (inside `root`) and its new content (`None`: the file
/// is removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) path: PathBuf,
    pub(crate) content: Option<String>,
    /// The file's content before, if it existed.
    pub(crate) before: Option<String>,
}

impl Change {
    fn write(path: PathBuf, content: String, before: Option<String>) -> Self {
        Self {
            path,
            content: Some(content),
            before,
        }
    }

    /// Whether the file is already as it should be.
    pub(crate) fn is_noop(&self) -> bool {
        self.before == self.content
    }
}

impl Layout {
    fn at(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }
}

/// What `setup` would write for `engine`.
pub(crate) fn plan(engine: Engine, l: &Layout) -> Result<Vec<Change>> {
    match engine {
        Engine::Podman => podman(l),
        Engine::Containerd => containerd(l).map(|c| vec![c]),
        Engine::Crio => Ok(vec![crio(l)?]),
        Engine::Docker => docker(l).map(|c| vec![c]),
    }
}

/// What `setup --remove` changes to take execguard out of `engine`'s configuration: the
/// files it wrote are removed, the entries it added to shared files are taken out (the rest
/// of those files kept).
pub(crate) fn plan_removal(engine: Engine, l: &Layout) -> Result<Vec<Change>> {
    let remove = |path: PathBuf| -> Result<Change> {
        Ok(Change {
            before: read_existing(&path)?,
            path,
            content: None,
        })
    };
    match engine {
        Engine::Podman => Ok(vec![
            remove(l.at(PODMAN_DROPIN))?,
            remove(l.at(&l.hooks_dir.join("execguard.json").to_string_lossy()))?,
        ]),
        Engine::Crio => Ok(vec![remove(l.at(CRIO_DROPIN))?]),
        Engine::Containerd => {
            let path = l.at(CONTAINERD_CONFIG);
            let Some(before) = read_existing(&path)? else {
                return Ok(Vec::new());
            };
            let mut doc: DocumentMut = before
                .parse()
                .with_context(|| format!("{} is not valid TOML", path.display()))?;
            let runtimes = doc
                .get_mut("plugins")
                .and_then(|p| p.get_mut("io.containerd.grpc.v1.cri"))
                .and_then(|c| c.get_mut("containerd"))
                .and_then(|c| c.get_mut("runtimes"))
                .and_then(Item::as_table_like_mut);
            if let Some(runtimes) = runtimes {
                runtimes.remove("execguard");
            }
            Ok(vec![Change::write(path, doc.to_string(), Some(before))])
        }
        Engine::Docker => {
            let path = l.at(DOCKER_DAEMON_JSON);
            let Some(before) = read_existing(&path)? else {
                return Ok(Vec::new());
            };
            let mut doc: serde_json::Value = serde_json::from_str(&before)
                .with_context(|| format!("{} is not valid JSON; left as it is", path.display()))?;
            if let Some(top) = doc.as_object_mut() {
                if let Some(runtimes) = top.get_mut("runtimes").and_then(|r| r.as_object_mut()) {
                    for (name, _) in DOCKER_RUNTIMES {
                        runtimes.remove(*name);
                    }
                    if runtimes.is_empty() {
                        top.remove("runtimes");
                    }
                }
            }
            let content = serde_json::to_string_pretty(&doc)? + "\n";
            // Untouched when there was nothing of ours (its formatting kept).
            let content = if serde_json::from_str::<serde_json::Value>(&before).ok() == Some(doc) {
                before.clone()
            } else {
                content
            };
            Ok(vec![Change::write(path, content, Some(before))])
        }
    }
}

/// Writes the changes (temporary file, synced, then renamed; an existing file's mode kept) and
/// removes the files to remove, skipping files already as they should be.
pub(crate) fn apply(changes: &[Change]) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for c in changes {
        if c.is_noop() {
            continue;
        }
        let Some(content) = &c.content else {
            std::fs::remove_file(&c.path)
                .with_context(|| format!("removing {}", c.path.display()))?;
            written.push(c.path.clone());
            continue;
        };
        if let Some(dir) = c.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mode = crate::fsutil::mode_or(&c.path, 0o644)
            .with_context(|| format!("reading {}", c.path.display()))?;
        crate::fsutil::write_atomic(&c.path, content.as_bytes(), mode)
            .with_context(|| format!("replacing {}", c.path.display()))?;
        written.push(c.path.clone());
    }
    Ok(written)
}

fn read_existing(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// podman's default hooks directories (used when no containers.conf names any).
const PODMAN_DEFAULT_HOOKS: &[&str] = &[
    "/usr/share/containers/oci/hooks.d",
    "/etc/containers/oci/hooks.d",
];
/// The podman hook as the package ships it; `setup` points it at the layout's paths.
const PACKAGED_HOOK: &str = include_str!("../hooks/execguard.json");
const PODMAN_DROPIN: &str = "/etc/containers/containers.conf.d/50-execguard.conf";

fn podman(l: &Layout) -> Result<Vec<Change>> {
    // Every hooks_dir already configured, in the order podman reads the files.
    let mut dirs: Vec<String> = Vec::new();
    let mut sources = vec![
        l.at("/usr/share/containers/containers.conf"),
        l.at("/etc/containers/containers.conf"),
    ];
    if let Ok(entries) = std::fs::read_dir(l.at("/etc/containers/containers.conf.d")) {
        let mut more: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        more.sort();
        sources.extend(more.into_iter().filter(|p| *p != l.at(PODMAN_DROPIN)));
    }
    for src in sources {
        let Some(text) = read_existing(&src)? else {
            continue;
        };
        let doc: DocumentMut = text
            .parse()
            .with_context(|| format!("{} is not valid TOML", src.display()))?;
        if let Some(list) = doc
            .get("engine")
            .and_then(|e| e.get("hooks_dir"))
            .and_then(Item::as_array)
        {
            // A later file's list replaces an earlier one's.
            dirs = list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
        }
    }
    if dirs.is_empty() {
        dirs = PODMAN_DEFAULT_HOOKS
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
    }
    let ours = l.hooks_dir.to_string_lossy().into_owned();
    if !dirs.contains(&ours) {
        dirs.push(ours);
    }
    let mut list = Array::new();
    for d in &dirs {
        list.push(d.as_str());
    }
    let mut doc = DocumentMut::new();
    let mut engine = Table::new();
    engine.insert("hooks_dir", value(list));
    doc.insert("engine", Item::Table(engine));
    let dropin = format!(
        "# Written by `execguard setup podman`: podman's hooks directories plus execguard's own\n\
         # (not a shared one: CRI-O reads those and does not know the precreate stage).\n{doc}"
    );
    let mut hook: serde_json::Value = serde_json::from_str(PACKAGED_HOOK)?;
    hook["hook"]["path"] = serde_json::json!(l.execguard);
    hook["hook"]["args"] = serde_json::json!(["execguard", "hook", "--config", l.config]);
    let hook_path = l.at(&l.hooks_dir.join("execguard.json").to_string_lossy());
    Ok(vec![
        Change::write(
            l.at(PODMAN_DROPIN),
            dropin,
            read_existing(&l.at(PODMAN_DROPIN))?,
        ),
        Change::write(
            hook_path.clone(),
            serde_json::to_string_pretty(&hook)? + "\n",
            read_existing(&hook_path)?,
        ),
    ])
}

const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";

fn containerd(l: &Layout) -> Result<Change> {
    let path = l.at(CONTAINERD_CONFIG);
    let before = read_existing(&path)?;
    let mut doc: DocumentMut = match &before {
        Some(t) => t
            .parse()
            .with_context(|| format!("{} is not valid TOML", path.display()))?,
        None => "version = 2\n".parse()?,
    };
    match doc.get("version").and_then(Item::as_integer) {
        None | Some(2) => {}
        Some(v) => bail!(
            "{}: config version {v}; `setup containerd` writes version 2 (containerd 1.x)",
            path.display()
        ),
    }
    if doc.get("version").is_none() {
        doc.insert("version", value(2));
    }
    let handler = ensure_table(
        &mut doc,
        &[
            "plugins",
            "io.containerd.grpc.v1.cri",
            "containerd",
            "runtimes",
            "execguard",
        ],
    )?;
    handler.insert("runtime_type", value("io.containerd.runc.v2"));
    let mut annotations = Array::new();
    annotations.push("execguard.io/*");
    handler.insert("pod_annotations", value(annotations.clone()));
    handler.insert("container_annotations", value(annotations));
    let options = ensure_sub(handler, "options")?;
    options.insert("BinaryName", value(l.runtime.to_string_lossy().as_ref()));
    // A config that names no runtime relies on containerd's built-in `runc` entry, which a
    // `runtimes` table of its own replaces: without this, the CRI plugin would refuse to load
    // ("no corresponding runtime configured ... for default_runtime_name").
    let cri = ensure_table(
        &mut doc,
        &["plugins", "io.containerd.grpc.v1.cri", "containerd"],
    )?;
    let builtin_default = cri
        .get("default_runtime_name")
        .and_then(Item::as_str)
        .is_none_or(|name| name == "runc");
    let runtimes = ensure_sub(cri, "runtimes")?;
    if builtin_default && !runtimes.contains_key("runc") {
        let runc = ensure_sub(runtimes, "runc")?;
        runc.insert("runtime_type", value("io.containerd.runc.v2"));
    }
    Ok(Change::write(path, doc.to_string(), before))
}

/// The table at `keys`, made (implicitly, like containerd's own config does) where missing.
fn ensure_table<'a>(doc: &'a mut DocumentMut, keys: &[&str]) -> Result<&'a mut Table> {
    let mut t = doc.as_table_mut();
    for k in keys {
        t = ensure_sub(t, k)?;
    }
    Ok(t)
}

fn ensure_sub<'a>(t: &'a mut Table, key: &str) -> Result<&'a mut Table> {
    if !t.contains_key(key) {
        let mut new = Table::new();
        new.set_implicit(true);
        t.insert(key, Item::Table(new));
    }
    t.get_mut(key)
        .and_then(Item::as_table_mut)
        .with_context(|| format!("`{key}` is not a table"))
}

const DOCKER_DAEMON_JSON: &str = "/etc/docker/daemon.json";

/// The Docker runtimes `setup docker` registers, with the mode each gives containers that
/// carry no `execguard.io/mode` annotation (`None`: the config's `mode`). Docker before 24 has
/// no `--annotation`, so the runtime's name is how a container picks its mode.
const DOCKER_RUNTIMES: &[(&str, Option<Mode>)] = &[
    ("execguard", None),
    ("execguard-audit", Some(Mode::Audit)),
    ("execguard-enforce", Some(Mode::Enforce)),
];

/// Adds execguard's runtimes to dockerd's `daemon.json`, keeping every other key and value.
fn docker(l: &Layout) -> Result<Change> {
    let path = l.at(DOCKER_DAEMON_JSON);
    let before = read_existing(&path)?;
    let mut doc: serde_json::Value = match before.as_deref() {
        None => serde_json::json!({}),
        Some(t) if t.trim().is_empty() => serde_json::json!({}),
        Some(t) => serde_json::from_str(t)
            .with_context(|| format!("{} is not valid JSON; left as it is", path.display()))?,
    };
    let top = doc
        .as_object_mut()
        .with_context(|| format!("{}: the top level is not a JSON object", path.display()))?;
    let runtimes = top
        .entry("runtimes")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .with_context(|| format!("{}: `runtimes` is not a JSON object", path.display()))?;
    for (name, mode) in DOCKER_RUNTIMES {
        let mut args = vec![
            "--execguard-config".to_owned(),
            l.config.to_string_lossy().into_owned(),
        ];
        if let Some(m) = mode {
            args.push(format!("--execguard-mode={m}"));
        }
        runtimes.insert(
            (*name).to_owned(),
            serde_json::json!({"path": l.runtime, "runtimeArgs": args}),
        );
    }
    Ok(Change::write(
        path,
        serde_json::to_string_pretty(&doc)? + "\n",
        before,
    ))
}

const CRIO_DROPIN: &str = "/etc/crio/crio.conf.d/50-execguard.conf";

fn crio(l: &Layout) -> Result<Change> {
    let path = l.at(CRIO_DROPIN);
    let content = format!(
        "# Written by `execguard setup crio`: the execguard runtime handler (runc behind\n\
         # execguard-runtime), with the execguard.io/mode annotation let through.\n\
         [crio.runtime.runtimes.execguard]\n\
         runtime_path = \"{}\"\n\
         runtime_type = \"oci\"\n\
         runtime_root = \"/run/runc\"\n\
         allowed_annotations = [\"execguard.io/mode\"]\n",
        l.runtime.display()
    );
    Ok(Change::write(path.clone(), content, read_existing(&path)?))
}

#[cfg(test)]
mod tests;
