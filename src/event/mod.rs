//! Detection events: one JSON object per line. Events are data, written here, never log lines.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

#[cfg(test)]
use crate::vocab::Rule;
use crate::vocab::{Abi, Importance, Mode, Outcome, Stage, Syscall};

mod cut;

pub use cut::fuzz_cuts;
pub(crate) use cut::{cut_to_fit, MAX_EVENT_LINE};

#[derive(Debug, Serialize)]
pub(crate) struct ContainerInfo {
    pub id: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct ProcessInfo {
    /// The notifying task, as the host sees it.
    pub pid: u32,
}

#[derive(Debug, Serialize)]
pub(crate) struct ExecInfo {
    /// `execve` or `execveat`; at the image checkpoint, the call that found the image.
    pub syscall: Syscall,
    /// `x86_64`, `i386`, `x32`, `aarch64` or `arm`: the system call ABI the exec came through.
    pub abi: Abi,
    /// The path as the process passed it (empty for `execveat(fd, "", AT_EMPTY_PATH)`).
    pub path: String,
    /// What the path resolved to inside the container's root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    pub argv: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub argv_truncated: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct SyscallInfo {
    pub name: Syscall,
    pub abi: Abi,
}

#[derive(Debug, Serialize)]
pub(crate) struct LoaderInfo {
    /// The loader that runs (for a shebang, the script's interpreter).
    pub path: String,
    /// `glibc` or `musl`.
    pub kind: &'static str,
    /// The program the loader is asked to load, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// `run`, `list`, `verify`, `help`, `version`, `list-tunables`, `list-diagnostics`.
    pub mode: &'static str,
    /// Loader options given before the program.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// How the loader came to run: `direct`, `shebang` or `pt_interp`.
    pub via: &'static str,
}

/// One detection, as written to the event log.
#[derive(Debug, Serialize)]
pub(crate) struct Event {
    pub time: String,
    pub event: &'static str,
    pub description: &'static str,
    pub category: &'static str,
    pub method: &'static str,
    pub importance: Importance,
    pub mode: Mode,
    pub action: Outcome,
    /// Identical events (same container, event, action, path and argv) suppressed by the rate
    /// limit since the last one written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeated: Option<u64>,
    /// Where it was seen.
    pub stage: Stage,
    /// For a denial, the errno the exec failed with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// For a loader run that an `[[allow]]` rule exempted, the rule's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_rule: Option<String>,
    pub reason: String,
    pub container: ContainerInfo,
    pub process: ProcessInfo,
    /// The exec, for every detection but `seccomp_listener_attempt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecInfo>,
    /// The system call, for detections that are not about an exec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<SyscallInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loader: Option<LoaderInfo>,
}

/// RFC 3339 UTC time with milliseconds.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Bytes from a container, as text for the log: valid UTF-8 stays as it is, invalid bytes become
/// U+FFFD. JSON escaping of quotes and control characters is serde_json's.
pub(crate) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Where events go: stdout or an append-only file. Each event is one `write` of one line,
/// flushed at once, so nothing is lost when the supervisor is killed after answering.
pub(crate) struct EventSink {
    out: Mutex<Box<dyn Write + Send>>,
    /// Also to syslog (`/dev/log`; journald reads it too), when configured.
    syslog: Option<Syslog>,
}

/// The syslog copy of the events: a datagram socket connected to `path`, connected again
/// when a send fails (a syslog daemon that restarts makes a new socket at the same path).
struct Syslog {
    path: std::path::PathBuf,
    socket: Mutex<Option<std::os::unix::net::UnixDatagram>>,
    /// Events whose syslog copy could not be sent (after one reconnection).
    dropped: std::sync::atomic::AtomicU64,
}

/// The largest syslog datagram sent: rsyslog's and syslog-ng's default maximum message size.
/// A longer event is cut, and ends with [`TRUNCATED`].
const MAX_SYSLOG_BYTES: usize = 8192;
const TRUNCATED: &[u8] = b"...[truncated]";

impl Syslog {
    fn connect(path: &Path) -> io::Result<std::os::unix::net::UnixDatagram> {
        let s = std::os::unix::net::UnixDatagram::unbound()?;
        s.connect(path)?;
        Ok(s)
    }

    fn send(&self, msg: &[u8]) {
        let mut socket = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        let sent = socket.as_ref().is_some_and(|s| s.send(msg).is_ok());
        if sent {
            return;
        }
        // Once more on a new connection: the daemon may have made a new socket.
        *socket = Self::connect(&self.path).ok();
        if socket.as_ref().is_none_or(|s| s.send(msg).is_err()) {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The syslog socket.
const DEV_LOG: &str = "/dev/log";

impl EventSink {
    pub(crate) fn stdout() -> Self {
        Self::from_writer(Box::new(io::stdout()))
    }

    pub(crate) fn file(path: &Path) -> io::Result<Self> {
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::from_writer(Box::new(f)))
    }

    pub(crate) fn from_writer(w: Box<dyn Write + Send>) -> Self {
        Self {
            out: Mutex::new(w),
            syslog: None,
        }
    }

    /// Also sends every event to the syslog socket at `path` (default `/dev/log`).
    pub(crate) fn with_syslog(mut self, path: Option<&Path>) -> io::Result<Self> {
        let path = path.unwrap_or(Path::new(DEV_LOG));
        let socket = Syslog::connect(path)?;
        self.syslog = Some(Syslog {
            path: path.to_owned(),
            socket: Mutex::new(Some(socket)),
            dropped: std::sync::atomic::AtomicU64::new(0),
        });
        Ok(self)
    }

    /// Events whose syslog copy was dropped (the socket gone even after reconnecting).
    pub(crate) fn syslog_dropped(&self) -> u64 {
        self.syslog
            .as_ref()
            .map_or(0, |s| s.dropped.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub(crate) fn emit(&self, event: &Event) -> io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
        if line.len() > MAX_EVENT_LINE {
            let mut v = serde_json::to_value(event).map_err(io::Error::other)?;
            cut_to_fit(&mut v);
            line = serde_json::to_vec(&v).map_err(io::Error::other)?;
        }
        if let Some(s) = &self.syslog {
            // facility authpriv (10); severity from the importance.
            let severity = match event.importance {
                Importance::Critical => 2,
                Importance::High => 3,
                Importance::Medium => 4,
                Importance::Low => 5,
                Importance::Info => 6,
            };
            let mut msg = format!("<{}>execguard: ", 10 * 8 + severity).into_bytes();
            msg.extend_from_slice(&line);
            if msg.len() > MAX_SYSLOG_BYTES {
                msg.truncate(MAX_SYSLOG_BYTES - TRUNCATED.len());
                msg.extend_from_slice(TRUNCATED);
            }
            s.send(&msg);
        }
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.write_all(&line)?;
        out.flush()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A sink's output, kept for the test to read.
    pub(crate) struct Buffer(pub(crate) std::sync::Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn hostile_bytes_stay_one_escaped_line() {
        let argv = lossy(b"a\n{\"event\":\"fake\"}\x1b[31m\xff\"");
        let mut ev = test_event("");
        ev.mode = Mode::Audit;
        ev.action = Outcome::Allowed;
        ev.stage = Stage::Exec;
        ev.exec = Some(ExecInfo {
            syscall: Syscall::Execve,
            abi: Abi::X86_64,
            path: argv.clone(),
            resolved: None,
            argv: vec![argv],
            argv_truncated: false,
        });
        let buf = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = EventSink::from_writer(Box::new(Buffer(buf.clone())));
        sink.emit(&ev).unwrap();
        let out = buf.lock().unwrap().clone();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["event"], "binary_executed_by_loader");
        assert_eq!(v["stage"], "exec");
        assert_eq!(v["container"]["id"], "c");
        assert!(!text.contains('\x1b'));
    }

    /// A syslog daemon that restarts (a new socket at the same path) still gets the events; a
    /// long event is cut with a marker; a copy that cannot be sent is counted.
    #[test]
    fn syslog_reconnects_truncates_and_counts_drops() {
        use std::os::unix::net::UnixDatagram;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let first = UnixDatagram::bind(&path).unwrap();
        let sink = EventSink::from_writer(Box::new(io::sink()))
            .with_syslog(Some(&path))
            .unwrap();
        let mut ev = test_event("one");
        sink.emit(&ev).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = first.recv(&mut buf).unwrap();
        assert!(
            buf[..n].starts_with(b"<82>execguard: {"),
            "{:?}",
            &buf[..20]
        );

        // The daemon restarts: the old socket goes, a new one takes the path.
        drop(first);
        std::fs::remove_file(&path).unwrap();
        let second = UnixDatagram::bind(&path).unwrap();
        ev.reason = "x".repeat(20_000);
        sink.emit(&ev).unwrap();
        let n = second.recv(&mut buf).unwrap();
        assert_eq!(n, MAX_SYSLOG_BYTES);
        assert!(buf[..n].ends_with(TRUNCATED));
        assert_eq!(sink.syslog_dropped(), 0);

        drop(second);
        std::fs::remove_file(&path).unwrap();
        sink.emit(&test_event("gone")).unwrap();
        assert_eq!(sink.syslog_dropped(), 1);
    }

    pub(crate) fn test_event(reason: &str) -> Event {
        Event {
            time: now_rfc3339(),
            event: Rule::BinaryExecutedByLoader.name(),
            description: Rule::BinaryExecutedByLoader.description(),
            category: "execution",
            method: "system_services",
            importance: Importance::Critical,
            mode: Mode::Enforce,
            action: Outcome::Denied,
            repeated: None,
            stage: Stage::Image,
            errno: None,
            allow_rule: None,
            reason: reason.to_owned(),
            container: ContainerInfo { id: "c".into() },
            process: ProcessInfo { pid: 1 },
            exec: None,
            syscall: None,
            loader: None,
        }
    }
}
