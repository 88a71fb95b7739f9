//! The worker's control endpoint: `GET /status` (JSON), `GET /metrics` (Prometheus text),
//! `POST /reload` (validate the config file, then ask the keeper to reload), over HTTP/1.0 on
//! a Unix socket that only root may use (mode 0600, peer uid checked). The same `/metrics`
//! can also be served on a loopback TCP port for Prometheus (`[metrics] listen`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::counters::LATENCY_BUCKETS_US;
use super::registry::Shared;
use crate::config::Config;

/// Requests larger than this are refused.
const MAX_REQUEST: u64 = 8 << 10;

#[derive(Serialize)]
struct ContainerStatus {
    id: String,
    mode: crate::vocab::Mode,
    guarded_since: String,
    execs_inspected: u64,
    images_inspected: u64,
    events: u64,
    denials: u64,
}

#[derive(Serialize)]
struct Status {
    version: &'static str,
    supervisor_uptime_s: u64,
    worker_uptime_s: u64,
    socket: PathBuf,
    default_mode: crate::vocab::Mode,
    exec_record: RecordStatus,
    containers: Vec<ContainerStatus>,
}

/// Whether ordinary images are answered from the kernel's exec record, and if not, why (the
/// reason the log gave).
#[derive(Serialize)]
struct RecordStatus {
    on: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

fn record_status(shared: &Shared) -> RecordStatus {
    RecordStatus {
        on: shared.record.is_ok(),
        reason: shared.record.as_ref().err().cloned(),
    }
}

fn status(shared: &Shared) -> Status {
    let containers = shared.containers.lock().unwrap_or_else(|p| p.into_inner());
    let mut list: Vec<ContainerStatus> = containers
        .values()
        .filter_map(std::sync::Weak::upgrade)
        .map(|c| ContainerStatus {
            id: c.id.clone(),
            mode: c.settings.mode,
            guarded_since: humantime::format_rfc3339_seconds(c.since).to_string(),
            execs_inspected: c.counters.execs.load(Ordering::Relaxed),
            images_inspected: c.counters.images.load(Ordering::Relaxed),
            events: c.counters.events.load(Ordering::Relaxed),
            denials: c.counters.denials.load(Ordering::Relaxed),
        })
        .collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    Status {
        version: env!("CARGO_PKG_VERSION"),
        supervisor_uptime_s: shared
            .keeper_started
            .and_then(|t| t.elapsed().ok())
            .map_or(0, |d| d.as_secs()),
        worker_uptime_s: shared.started.elapsed().as_secs(),
        socket: shared.config.socket.clone(),
        default_mode: shared.config.mode,
        exec_record: record_status(shared),
        containers: list,
    }
}

fn metrics(shared: &Shared) -> String {
    let c = &shared.counters;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, u64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in lines {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    metric(
        "execguard_notifications_total",
        "counter",
        "Notifications answered, by checkpoint.",
        vec![
            (
                "{stage=\"exec\"}".into(),
                c.exec_notifications.load(Ordering::Relaxed),
            ),
            (
                "{stage=\"image\"}".into(),
                c.image_notifications.load(Ordering::Relaxed),
            ),
            (
                "{stage=\"syscall\"}".into(),
                c.other_notifications.load(Ordering::Relaxed),
            ),
        ],
    );
    let events = shared.events_by.lock().unwrap_or_else(|p| p.into_inner());
    metric(
        "execguard_events_total",
        "counter",
        "Events written, by name and importance.",
        events
            .iter()
            .map(|((name, imp), v)| {
                (
                    format!("{{event=\"{name}\",importance=\"{}\"}}", imp.as_str()),
                    *v,
                )
            })
            .collect(),
    );
    drop(events);
    metric(
        "execguard_denials_total",
        "counter",
        "Calls denied.",
        vec![(String::new(), c.denials.load(Ordering::Relaxed))],
    );
    metric(
        "execguard_notification_errors_total",
        "counter",
        "Receive or answer failures other than a task gone.",
        vec![(String::new(), c.notification_errors.load(Ordering::Relaxed))],
    );
    metric(
        "execguard_cpu_cgroup_leaves_total",
        "counter",
        "Times a thread serving a container left the container's CPU cgroup for a while because its answers waited for a CPU (the CPUs are oversubscribed).",
        vec![(String::new(), c.cpu_cgroup_leaves.load(Ordering::Relaxed))],
    );
    metric(
        "execguard_images_by_record_total",
        "counter",
        "Image notifications answered from the kernel's exec record alone, without a look through /proc.",
        vec![(String::new(), c.images_by_record.load(Ordering::Relaxed))],
    );
    let record = record_status(shared);
    let reason = record
        .reason
        .as_deref()
        .map(|r| format!("{{reason=\"{}\"}}", prometheus_label(r)))
        .unwrap_or_default();
    metric(
        "execguard_exec_record_on",
        "gauge",
        "1 when ordinary images are answered from the kernel's exec record; 0 when every image is looked at through /proc, with the reason as a label.",
        vec![(reason, u64::from(record.on))],
    );
    let guarded = shared
        .containers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter(|w| w.strong_count() > 0)
        .count() as u64;
    metric(
        "execguard_containers_guarded",
        "gauge",
        "Containers with at least one notify fd served.",
        vec![(String::new(), guarded)],
    );
    // Survives upgrades (the keeper carries it across); a change means the keeper ended, and
    // with it the guard of every container running then.
    let keeper_started = shared
        .keeper_started
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    metric(
        "execguard_keeper_start_time_seconds",
        "gauge",
        "When the keeper started (seconds since the epoch; kept across in-place upgrades).",
        vec![(String::new(), keeper_started)],
    );
    metric(
        "execguard_syslog_dropped_total",
        "counter",
        "Events whose syslog copy could not be sent, even on a new connection.",
        vec![(String::new(), shared.sink.syslog_dropped())],
    );
    out.push_str("# HELP execguard_answer_latency_microseconds Time from receiving a notification to answering it.\n");
    out.push_str("# TYPE execguard_answer_latency_microseconds histogram\n");
    // The count first: a sample recorded while the buckets are read then shows in no bucket
    // rather than making `+Inf` smaller than a finite bucket.
    let count = c.latency.count();
    for b in LATENCY_BUCKETS_US {
        let at_most = c.latency.count_at_most(b).min(count);
        out.push_str(&format!(
            "execguard_answer_latency_microseconds_bucket{{le=\"{b}\"}} {at_most}\n"
        ));
    }
    out.push_str(&format!(
        "execguard_answer_latency_microseconds_bucket{{le=\"+Inf\"}} {count}\n"
    ));
    out.push_str(&format!(
        "execguard_answer_latency_microseconds_sum {}\nexecguard_answer_latency_microseconds_count {count}\n",
        c.latency.sum()
    ));
    out
}

/// Validates the config file for a reload.
fn check_reload(shared: &Shared) -> Result<(), crate::config::ConfigError> {
    Config::load_or_default(shared.config_path.as_deref()).map(drop)
}

/// Asks the keeper (this worker's parent) to reload; it replaces this worker, so the answer
/// to the client is written first.
fn signal_reload() {
    let keeper = nix::unistd::getppid();
    if let Err(e) = nix::sys::signal::kill(keeper, nix::sys::signal::Signal::SIGHUP) {
        tracing::error!(error = %e, "cannot signal the keeper to reload");
    }
}

/// Starts the control endpoint and, when configured, the metrics port.
pub(super) fn start(shared: Arc<Shared>) {
    let path = shared.config.control.socket.clone();
    match crate::supervisor::socket::bind_root_only(
        &path,
        crate::supervisor::socket::Existing::Replace,
    ) {
        Ok(listener) => {
            let shared = shared.clone();
            let _ = std::thread::Builder::new()
                .name("control".into())
                .spawn(move || {
                    for stream in listener.incoming().flatten() {
                        if !crate::supervisor::socket::peer_is_root(&stream, "control") {
                            continue;
                        }
                        serve(stream, &shared, true);
                    }
                });
        }
        Err(e) => {
            tracing::error!(socket = %path.display(), error = %e, "cannot open the control socket")
        }
    }
    let listen = shared.config.metrics.listen.clone();
    if !listen.is_empty() {
        match TcpListener::bind(&listen) {
            Ok(listener) => {
                let _ = std::thread::Builder::new()
                    .name("metrics".into())
                    .spawn(move || {
                        for stream in listener.incoming().flatten() {
                            serve(stream, &shared, false);
                        }
                    });
            }
            Err(e) => tracing::error!(listen, error = %e, "cannot open the metrics port"),
        }
    }
}

/// Answers one HTTP/1.0 request. `full` allows /status and /reload (the root-only socket);
/// the TCP port serves /metrics alone.
fn serve<S: Read + Write + SetTimeout>(stream: S, shared: &Shared, full: bool) {
    stream.set_timeouts(Duration::from_secs(2));
    let mut reader = BufReader::new(stream.take(MAX_REQUEST));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut then_reload = false;
    let (code, kind, body) = match (method, target, full) {
        ("GET", "/metrics", _) => ("200 OK", "text/plain; version=0.0.4", metrics(shared)),
        ("GET", "/status", true) => (
            "200 OK",
            "application/json",
            serde_json::to_string_pretty(&status(shared)).unwrap_or_default() + "\n",
        ),
        ("POST", "/reload", true) => match check_reload(shared) {
            Ok(()) => {
                then_reload = true;
                let m =
                    "reloading: a new worker starts with the new config; no container is dropped";
                ("200 OK", "text/plain", format!("{m}\n"))
            }
            Err(e) => (
                "400 Bad Request",
                "text/plain",
                format!("{e}; the running config stays\n"),
            ),
        },
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let mut stream = reader.into_inner().into_inner();
    let _ = write!(
        stream,
        "HTTP/1.0 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
    drop(stream);
    if then_reload {
        signal_reload();
    }
}

/// What `serve` needs of a connection.
trait SetTimeout {
    fn set_timeouts(&self, d: Duration);
}

impl SetTimeout for UnixStream {
    fn set_timeouts(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
        let _ = self.set_write_timeout(Some(d));
    }
}

impl SetTimeout for std::net::TcpStream {
    fn set_timeouts(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
        let _ = self.set_write_timeout(Some(d));
    }
}

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("cannot reach the supervisor at {socket}: {source}")]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the supervisor at {socket}: {source}")]
    Exchange {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

/// A client request to the control socket: the body of the answer, or the error it carries.
pub fn request(socket: &Path, method: &str, target: &str) -> Result<String, RequestError> {
    let exchange = |source| RequestError::Exchange {
        socket: socket.to_owned(),
        source,
    };
    let mut s = UnixStream::connect(socket).map_err(|source| RequestError::Connect {
        socket: socket.to_owned(),
        source,
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    write!(s, "{method} {target} HTTP/1.0\r\n\r\n").map_err(exchange)?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(exchange)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    if head.starts_with("HTTP/1.0 200") {
        Ok(body.to_owned())
    } else {
        Err(RequestError::Refused(body.trim_end().to_owned()))
    }
}

/// A label value as the Prometheus text format writes it: backslash, double quote and newline
/// escaped.
fn prometheus_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::prometheus_label;

    #[test]
    fn a_reason_is_escaped_as_a_label_value() {
        assert_eq!(prometheus_label("a \"b\"\\c\nd"), "a \\\"b\\\"\\\\c\\nd");
    }
}
