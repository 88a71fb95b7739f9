//! The `execguard` binary: parses arguments and calls the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use execguard::commands;
use execguard::vocab::Mode;

#[derive(Parser)]
#[command(
    name = "execguard",
    version,
    about = "Stops programs from being run through the dynamic loader inside CI build containers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum SetupEngine {
    Podman,
    Containerd,
    Crio,
    Docker,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Markdown,
    Github,
    Sarif,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFailOn {
    Denied,
    Critical,
    High,
    Medium,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExplainMode {
    Audit,
    Enforce,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the listener socket, answer every exec of guarded containers, write events.
    Supervise {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Append events (one JSON object per line) to this file instead of stdout.
        #[arg(long)]
        events: Option<PathBuf>,
    },
    /// Patch BUNDLE/config.json so that runc hands the container to the supervisor.
    Inject {
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The worker that the supervisor (the keeper) starts and restarts; not for people.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        events: Option<PathBuf>,
        #[arg(long)]
        channel_fd: i32,
        #[arg(long)]
        slots_fd: i32,
        /// The exec record's map and link descriptors, comma-separated.
        #[arg(long)]
        record_fds: Option<String>,
        /// Why the keeper has no exec record (for status and metrics).
        #[arg(long)]
        record_off: Option<String>,
    },
    /// Loads the exec record for the keeper and sends it its descriptors; not for people.
    #[command(hide = true)]
    LoadExecRecord {
        #[arg(long)]
        fd: i32,
    },
    /// Show the supervised containers and the supervisor's state (over the control socket).
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the JSON the supervisor sends.
        #[arg(long)]
        json: bool,
    },
    /// Check the config file, then make the running supervisor re-read it (like SIGHUP).
    Reload {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write (or show, with --dry-run) the configuration an engine needs, keeping what its
    /// files already say.
    Setup {
        #[arg(value_enum)]
        engine: SetupEngine,
        /// Show the files and their new content; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Take execguard out of the engine's configuration instead (the rest is kept).
        #[arg(long)]
        remove: bool,
        /// Write under this directory instead of / (image builds, tests).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Where execguard-runtime is installed.
        #[arg(long, default_value = "/usr/bin/execguard-runtime")]
        runtime_path: PathBuf,
        /// Where execguard is installed.
        #[arg(long, default_value = "/usr/bin/execguard")]
        execguard_path: PathBuf,
        /// The config the hook reads.
        #[arg(long, default_value = execguard::config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// podman: execguard's own hooks directory (added to podman's list).
        #[arg(long, default_value = "/usr/share/execguard/hooks.d")]
        hooks_dir: PathBuf,
    },
    /// A podman precreate hook: the spec on stdin, the patched spec on stdout.
    Hook {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run COMMAND guarded without a container runtime (a CI job on a plain VM): the seccomp
    /// filter on COMMAND and everything it starts, answered by a supervisor in this process;
    /// exits with COMMAND's status (128+signal when it was killed).
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The mode (default: the config's `mode`).
        #[arg(long, value_enum)]
        mode: Option<ExplainMode>,
        /// The name events carry as the container id (default run-PID).
        #[arg(long)]
        name: Option<String>,
        /// Where its own supervisor writes events (JSON lines; default stderr).
        #[arg(long)]
        events: Option<PathBuf>,
        /// Hand the filter to the running `execguard supervise` (the config's socket) instead
        /// of supervising it here; needs root.
        #[arg(long)]
        supervisor: bool,
        /// Run COMMAND as this user (name or uid; root only, e.g. `sudo execguard run --user
        /// "$USER" -- make`): its supervisor stays root, out of the command's reach.
        #[arg(long)]
        user: Option<String>,
        /// COMMAND [ARG...].
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Sum up event files for CI: a Markdown job summary, GitHub annotations, SARIF 2.1.0 or
    /// JSON on stdout. Exit status 1 when --fail-on is reached, 2 when a file cannot be read.
    Report {
        #[arg(long, value_enum, default_value = "markdown")]
        format: ReportFormat,
        /// Fail (exit status 1) on any denied exec, or on any event at or above an importance
        /// (audit mode included).
        #[arg(long, value_enum)]
        fail_on: Option<ReportFailOn>,
        /// Event files (JSON lines; `.gz` ones decompressed; `-` for stdin).
        #[arg(required = true)]
        events: Vec<PathBuf>,
    },
    /// Say what this kernel offers execguard: seccomp user notification, the synchronous
    /// wake-up, PROCMAP_QUERY, BTF and the exec record (loaded and dropped, as root), cgroup
    /// version. One line each.
    Features,
    /// Say, offline on this host, what the supervisor would decide for an exec, and why.
    Explain {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum)]
        mode: Option<ExplainMode>,
        /// PATH [ARG...]: the exec to explain (argv[0] is PATH).
        #[arg(last = true, required = true)]
        exec: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` shares its stderr with the job it guards: only warnings there by default.
    let default_level = match cli.command {
        Command::Run { .. } => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EXECGUARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    let result = match cli.command {
        Command::Report {
            format,
            fail_on,
            events,
        } => {
            use execguard::report::{FailOn, Format};
            use execguard::vocab::Importance;
            let format = match format {
                ReportFormat::Markdown => Format::Markdown,
                ReportFormat::Github => Format::Github,
                ReportFormat::Sarif => Format::Sarif,
                ReportFormat::Json => Format::Json,
            };
            let fail_on = fail_on.map(|f| match f {
                ReportFailOn::Denied => FailOn::Denied,
                ReportFailOn::Critical => FailOn::Importance(Importance::Critical),
                ReportFailOn::High => FailOn::Importance(Importance::High),
                ReportFailOn::Medium => FailOn::Importance(Importance::Medium),
            });
            return match commands::report(format, fail_on, &events) {
                Ok(false) => ExitCode::SUCCESS,
                Ok(true) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("execguard: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Supervise { config, events } => {
            commands::supervise(config.as_deref(), events.as_deref())
        }
        Command::Inject { bundle, config } => commands::inject(&bundle, config.as_deref()),
        Command::Hook { config } => commands::hook(config.as_deref()),
        Command::Status { config, json } => commands::status(config.as_deref(), json),
        Command::Setup {
            engine,
            dry_run,
            remove,
            root,
            runtime_path,
            execguard_path,
            config,
            hooks_dir,
        } => {
            let engine = match engine {
                SetupEngine::Podman => execguard::setup::Engine::Podman,
                SetupEngine::Containerd => execguard::setup::Engine::Containerd,
                SetupEngine::Crio => execguard::setup::Engine::Crio,
                SetupEngine::Docker => execguard::setup::Engine::Docker,
            };
            let layout = execguard::setup::Layout {
                root,
                execguard: execguard_path,
                runtime: runtime_path,
                config,
                hooks_dir,
            };
            commands::setup(engine, &layout, dry_run, remove)
        }
        Command::Reload { config } => commands::reload(config.as_deref()),
        Command::LoadExecRecord { fd } => commands::load_exec_record(fd),
        Command::Worker {
            config,
            events,
            channel_fd,
            slots_fd,
            record_fds,
            record_off,
        } => commands::worker(
            config.as_deref(),
            events.as_deref(),
            channel_fd,
            slots_fd,
            record_fds.as_deref(),
            record_off.as_deref(),
        ),
        Command::Run {
            config,
            mode,
            name,
            events,
            supervisor,
            user,
            command,
        } => {
            let req = execguard::run::RunRequest {
                config: config.as_deref(),
                mode: mode.map(|m| match m {
                    ExplainMode::Audit => Mode::Audit,
                    ExplainMode::Enforce => Mode::Enforce,
                }),
                name: name.as_deref(),
                events: events.as_deref(),
                external: supervisor,
                user: user.as_deref(),
                command: &command,
            };
            return match execguard::run::run(&req) {
                Ok(status) => ExitCode::from(status),
                Err(e) => {
                    eprintln!("execguard: {e:#}");
                    ExitCode::from(127)
                }
            };
        }
        Command::Features => commands::features(),
        Command::Explain { config, mode, exec } => {
            let mode = mode.map(|m| match m {
                ExplainMode::Audit => Mode::Audit,
                ExplainMode::Enforce => Mode::Enforce,
            });
            commands::explain(config.as_deref(), mode, &exec)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("execguard: {e:#}");
            ExitCode::FAILURE
        }
    }
}
