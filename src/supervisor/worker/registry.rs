//! The worker's shared state: the containers it guards, by id, and what every notify fd's
//! thread shares (config, event sink, slot file, counters).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Instant, SystemTime};

use super::counters;
use crate::config::Config;
use crate::event::EventSink;
use crate::inspect::{resolve::FsView, SystemLoaders};
use crate::policy::Settings;
use crate::spec::MODE_ANNOTATION;
use crate::supervisor::record::ExecRecord;
use crate::supervisor::slots::Slots;
use crate::supervisor::state::ContainerProcessState;
use crate::vocab::{Importance, Mode};

/// A container the supervisor guards, shared by the threads of its notify fds.
pub(super) struct Container {
    pub id: String,
    pub settings: Settings,
    pub loaders: SystemLoaders,
    /// The container's pid namespace (device, inode), when it could be seen.
    pub pid_ns: Option<(u64, u64)>,
    pub since: SystemTime,
    pub counters: counters::ContainerCounters,
}

/// What every worker thread shares.
pub(super) struct Shared {
    pub config: Config,
    /// The config file, for `reload` to validate.
    pub config_path: Option<PathBuf>,
    pub sink: EventSink,
    pub slots: Slots,
    /// Containers by id, while any of their notify fds is served.
    pub containers: Mutex<HashMap<String, Weak<Container>>>,
    pub counters: Arc<counters::Counters>,
    pub events_by: Mutex<BTreeMap<(&'static str, Importance), u64>>,
    pub started: Instant,
    /// When the keeper started (the supervisor's uptime survives worker restarts).
    pub keeper_started: Option<SystemTime>,
    /// The kernel's record of what each exec loaded, or why there is none (status, metrics).
    pub record: Result<ExecRecord, String>,
}

impl Shared {
    pub(super) fn new(
        config: Config,
        config_path: Option<PathBuf>,
        sink: EventSink,
        slots: Slots,
        keeper_started: Option<SystemTime>,
        record: Result<ExecRecord, String>,
    ) -> Self {
        Self {
            config,
            config_path,
            sink,
            slots,
            containers: Mutex::new(HashMap::new()),
            counters: Arc::new(counters::Counters::default()),
            events_by: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
            keeper_started,
            record,
        }
    }

    /// The settings of the container with this id and these annotations.
    pub(super) fn settings_for(&self, id: &str, annotations: &HashMap<String, String>) -> Settings {
        let annotated = annotations
            .get(MODE_ANNOTATION)
            .and_then(|v| Mode::from_annotation(v));
        Settings {
            mode: annotated.unwrap_or(self.config.mode),
            enforce: self.config.enforce.clone(),
            rules: self.config.rules.clone(),
            allow: crate::policy::allow::for_container(&self.config.allow, id, annotations),
        }
    }

    /// The container of this message: the one already guarded under its id (a `runc exec`),
    /// or a new one, whose own loaders are found in its root.
    pub(super) fn admit(&self, state: &ContainerProcessState) -> Arc<Container> {
        let id = state.state.id.clone();
        if let Some(c) = self.lookup(&id) {
            return c;
        }
        let settings = self.settings_for(&id, &state.state.annotations);
        let pid = u32::try_from(state.pid).unwrap_or(0);
        let loaders = match FsView::of_task(pid) {
            Ok(view) => SystemLoaders::discover(&view, &self.config.detect.extra_system_loaders),
            Err(e) => {
                tracing::warn!(container = %id, pid, error = %e, "cannot see the container's root; loader copies are still found by content");
                SystemLoaders::default()
            }
        };
        let pid_ns = nix::sys::stat::stat(format!("/proc/{pid}/ns/pid").as_str())
            .ok()
            .map(|st| (st.st_dev, st.st_ino));
        tracing::info!(container = %id, pid, mode = %settings.mode, loaders = loaders.len(), "guarding container");
        let c = Arc::new(Container {
            id: id.clone(),
            settings,
            loaders,
            pid_ns,
            since: SystemTime::now(),
            counters: counters::ContainerCounters::default(),
        });
        let mut containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        // Another thread may have admitted the same container meanwhile; either is right.
        containers.insert(id, Arc::downgrade(&c));
        c
    }

    fn lookup(&self, id: &str) -> Option<Arc<Container>> {
        let containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        containers.get(id).and_then(Weak::upgrade)
    }

    /// Forgets a container once none of its notify fds is served any more.
    pub(super) fn release(&self, id: &str) {
        let mut containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        if containers.get(id).is_some_and(|w| w.upgrade().is_none()) {
            containers.remove(id);
            tracing::info!(container = %id, "container released");
        }
    }
}
