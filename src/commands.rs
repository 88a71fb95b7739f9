//! The subcommands of the `execguard` binary. `main.rs` parses arguments and calls these.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::event::EventSink;
use crate::guard::MAX_SPEC_BYTES;
use crate::guard::{self, Decision, Entry};
use crate::inspect::allow::Judgement;
use crate::inspect::loader_args::LoaderEnv;
use crate::inspect::resolve::FsView;
use crate::inspect::{self, Argv, ExecRequest, GivenArgs, SystemLoaders};
use crate::policy::{self, Action, Settings};
use crate::supervisor::keeper;
use crate::supervisor::slots::Slots;
use crate::vocab::{Errno, Mode, Syscall};

/// `execguard supervise`: the keeper, which runs and restarts the worker.
pub fn supervise(config_path: Option<&Path>, events: Option<&Path>) -> Result<()> {
    crate::supervisor::features::check_minimum()
        .map_err(|why| anyhow::anyhow!("execguard cannot guard anything here: {why}"))?;
    crate::supervisor::features::log_missing();
    let config = Config::load_or_default(config_path)?;
    if cfg!(target_arch = "aarch64") && !config.detect.exec_checkpoint {
        tracing::warn!("{}", crate::config::NO_EXEC_CHECKPOINT_WARNING);
    }
    // Fail here, not in every worker, when the events file cannot be written.
    if let Some(p) = events {
        EventSink::file(p).with_context(|| format!("opening events file {}", p.display()))?;
    }
    let cmd = keeper::WorkerCommand {
        // Resolved now, as a path: after an upgrade replaces the file, new workers are the
        // new binary (`/proc/self/exe` would keep naming the old one).
        exe: std::env::current_exe().context("finding the execguard binary")?,
        config: config_path.map(Path::to_owned),
        events: events.map(Path::to_owned),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        record: None,
        record_off: None,
    };
    keeper::run(config, cmd)?;
    Ok(())
}

/// `execguard worker` (started by the keeper, not by people).
pub fn worker(
    config_path: Option<&Path>,
    events: Option<&Path>,
    channel_fd: i32,
    slots_fd: i32,
    record_fds: Option<&str>,
    record_off: Option<&str>,
) -> Result<()> {
    let config = Config::load_or_default(config_path)?;
    let mut sink = match events {
        Some(p) => {
            EventSink::file(p).with_context(|| format!("opening events file {}", p.display()))?
        }
        None => EventSink::stdout(),
    };
    if config.events.syslog {
        let socket = &config.events.syslog_socket;
        sink = sink
            .with_syslog(Some(socket))
            .with_context(|| format!("connecting to syslog at {}", socket.display()))?;
    }
    let channel = crate::sys::adopt_inherited_fd(channel_fd).context("the keeper's channel")?;
    let slots = crate::sys::adopt_inherited_fd(slots_fd).context("the slot file")?;
    let record = crate::supervisor::record::open_passed(record_fds, record_off);
    crate::supervisor::run_worker(
        config,
        config_path.map(Path::to_owned),
        sink,
        channel,
        Slots::from_fd(slots).context("mapping the slot file")?,
        record,
    )?;
    Ok(())
}

/// `execguard load-exec-record` (started by the keeper, not by people).
pub fn load_exec_record(fd: i32) -> Result<()> {
    let socket = crate::sys::adopt_inherited_fd(fd).context("the keeper's socket")?;
    crate::supervisor::record::serve_loader(socket).context("sending the exec record")?;
    Ok(())
}

/// `execguard features`: what this kernel offers, one line each (`name: yes` or `name: no
/// (why)`); the supervisor logs the same at start. The exec record is tried only as root.
pub fn features() -> Result<()> {
    let root = nix::unistd::geteuid().is_root();
    for (name, have) in crate::supervisor::kernel_features(root) {
        match have {
            Ok(()) => println!("{name}: yes"),
            Err(why) => println!("{name}: no ({why})"),
        }
    }
    Ok(())
}

/// `execguard status [--json]`: the supervised containers, over the control socket.
pub fn status(config: Option<&Path>, json: bool) -> Result<()> {
    let config = Config::load_or_default(config)?;
    let body = crate::supervisor::control::request(&config.control.socket, "GET", "/status")?;
    if json {
        print!("{body}");
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&body).context("the supervisor's status")?;
    println!(
        "execguard {}: supervisor up {} s (worker {} s), socket {}, default mode {}",
        v["version"].as_str().unwrap_or("?"),
        v["supervisor_uptime_s"],
        v["worker_uptime_s"],
        v["socket"].as_str().unwrap_or("?"),
        v["default_mode"].as_str().unwrap_or("?"),
    );
    let record = &v["exec_record"];
    match (record["on"].as_bool(), record["reason"].as_str()) {
        (Some(true), _) => println!("exec record: on"),
        (Some(false), Some(why)) => {
            println!("exec record: off ({why}); images looked at through /proc")
        }
        _ => println!("exec record: unknown (a supervisor older than this command)"),
    }
    let containers = v["containers"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<40} {:<8} {:<21} {:>8} {:>8} {:>7} {:>7}",
        "CONTAINER", "MODE", "GUARDED SINCE", "EXECS", "IMAGES", "EVENTS", "DENIED"
    );
    for c in &containers {
        println!(
            "{:<40} {:<8} {:<21} {:>8} {:>8} {:>7} {:>7}",
            c["id"].as_str().unwrap_or("?"),
            c["mode"].as_str().unwrap_or("?"),
            c["guarded_since"].as_str().unwrap_or("?"),
            c["execs_inspected"],
            c["images_inspected"],
            c["events"],
            c["denials"]
        );
    }
    println!("{} container(s) guarded", containers.len());
    Ok(())
}

/// `execguard reload`: validates the config here (saying exactly what is wrong), then asks the
/// supervisor to reload it.
pub fn reload(config_path: Option<&Path>) -> Result<()> {
    let config = Config::load_or_default(config_path)?;
    let body = crate::supervisor::control::request(&config.control.socket, "POST", "/reload")?;
    print!("{body}");
    Ok(())
}

/// `execguard inject --bundle DIR`: patches DIR/config.json in place, atomically.
pub fn inject(bundle: &Path, config: Option<&Path>) -> Result<()> {
    let config = Config::load_or_default(config)?;
    let decision = guard::patch_bundle(
        bundle,
        &config,
        guard::Request::new(Entry::Inject, false),
        None,
    )?;
    println!("{}", decision.describe(&config));
    Ok(())
}

/// `execguard hook`: a podman `precreate` hook. Reads the spec on stdin, writes the patched
/// spec on stdout. Podman gives hooks no environment and discards their stderr, so problems
/// also go to `report_log`.
pub fn hook(config: Option<&Path>) -> Result<()> {
    let config = match Config::load_or_default(config) {
        Ok(c) => c,
        Err(e) => {
            let reason = format!("cannot load the config: {e}");
            guard::report_failure(&Config::default(), Entry::Hook, None, &reason);
            bail!(reason);
        }
    };
    let mut text = Vec::new();
    std::io::stdin()
        .take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut text)
        .context("reading the spec on stdin")?;
    let result = (|| -> Result<(Vec<u8>, Decision)> {
        if text.len() as u64 > MAX_SPEC_BYTES {
            bail!("the spec on stdin is larger than {MAX_SPEC_BYTES} bytes");
        }
        let mut value: serde_json::Value =
            serde_json::from_slice(&text).context("the spec on stdin is not valid JSON")?;
        let container = value["hostname"].as_str().map(str::to_owned);
        let decision = guard::guard_spec(
            &mut value,
            &config,
            guard::Request::new(Entry::Hook, true),
            container.as_deref(),
        )?;
        let out = match decision {
            Decision::Guarded { .. } => serde_json::to_vec(&value)?,
            Decision::NotGuarded { .. } => text.clone(),
        };
        Ok((out, decision))
    })();
    match result {
        Ok((out, _)) => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&out)?;
            stdout.flush()?;
            Ok(())
        }
        Err(e) => {
            guard::report_failure(&config, Entry::Hook, None, &format!("{e:#}"));
            Err(e)
        }
    }
}

/// `execguard explain -- PATH [ARG...]`: what the supervisor would decide, on this host.
pub fn explain(config: Option<&Path>, mode: Option<Mode>, argv: &[String]) -> Result<()> {
    let config = Config::load_or_default(config)?;
    let Some(path) = argv.first() else {
        bail!("explain needs a PATH to inspect");
    };
    let settings = Settings {
        mode: mode.unwrap_or(config.mode),
        enforce: config.enforce.clone(),
        rules: config.rules.clone(),
        allow: config.allow.clone(),
    };
    let view = FsView::of_self().context("opening this process's root and cwd")?;
    let loaders = SystemLoaders::discover(&view, &config.detect.extra_system_loaders);
    let req = ExecRequest {
        syscall: Syscall::Execve,
        abi: crate::traps::ABIS[0].abi,
        path: path.as_bytes().to_vec(),
        dirfd: None,
        flags: 0,
    };
    // The loader would see this command's environment.
    let host_env: Vec<Vec<u8>> = std::env::vars_os()
        .map(|(k, v)| [k.as_encoded_bytes(), b"=", v.as_encoded_bytes()].concat())
        .collect();
    let mut args = GivenArgs {
        argv: Argv {
            items: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            truncated: false,
        },
        env: LoaderEnv::scan(host_env.iter().map(Vec::as_slice)),
    };
    let mut out = String::new();
    out.push_str(&format!("exec:       {}\n", argv.join(" ")));
    let inspected = inspect::inspect(
        &req,
        &view,
        &mut args,
        &loaders,
        &mut inspect::FileCache::default(),
        &mut crate::phases::PhaseClock::start(),
    );
    let judgement = inspected
        .as_ref()
        .ok()
        .and_then(|i| i.finding.as_ref())
        .and_then(|f| explain_exemption(&view, f, &settings));
    match &inspected {
        Ok(i) => {
            if let Some(r) = &i.resolved {
                out.push_str(&format!("resolved:   {}\n", String::from_utf8_lossy(r)));
            }
            match &i.finding {
                None => out.push_str("finding:    none (an ordinary exec, no event)\n"),
                Some(f) => {
                    out.push_str(&format!("rule:       {}\n", f.rule.name()));
                    out.push_str(&format!("reason:     {}\n", f.reason));
                    if let Some(l) = &f.loader {
                        out.push_str(&format!(
                            "loader:     {} ({}, {} mode, via {})\n",
                            String::from_utf8_lossy(&l.path),
                            l.kind.as_str(),
                            l.invocation.mode.as_str(),
                            l.via.as_str()
                        ));
                        if let Some(p) = &l.invocation.program {
                            out.push_str(&format!("program:    {}\n", String::from_utf8_lossy(p)));
                        }
                    }
                }
            }
            match &judgement {
                Some(Judgement::Exempt(e)) => out.push_str(&format!(
                    "allow:      [[allow]] {:?} exempts it: the program is {} (a running \
                     image is also checked to have mapped this very file)\n",
                    e.rule, e.basis
                )),
                Some(Judgement::NotExempt(why)) => out.push_str(&format!(
                    "allow:      no [[allow]] rule exempts it: {why}\n"
                )),
                None => {}
            }
        }
        Err(e) => out.push_str(&format!("error:      {e}\n")),
    }
    // The same decision the supervisor makes, on what was found here.
    let verdict = policy::decide(
        inspected.as_ref().map(|i| i.finding.as_ref()),
        policy::Allow::judged(judgement.as_ref()),
        &settings,
    )
    .verdict;
    if let Some((_, importance)) = verdict.event {
        out.push_str(&format!("importance: {}\n", importance.as_str()));
    }
    let action = match verdict.action {
        Action::Continue => "allow".to_owned(),
        Action::Deny(e) => format!("deny ({})", Errno(e).name()),
    };
    out.push_str(&format!("verdict:    {action} in {} mode\n", settings.mode));
    print!("{out}");
    Ok(())
}

/// What the `[[allow]]` rules say of a finding, when one could apply.
fn explain_exemption(view: &FsView, f: &inspect::Finding, s: &Settings) -> Option<Judgement> {
    if !policy::allow::may_exempt(f, s) {
        return None;
    }
    let inv = &f.loader.as_ref()?.invocation;
    let rules: Vec<_> = policy::allow::candidates(&s.allow, inv).collect();
    Some(inspect::allow::judge_program(
        view,
        inv.program.as_deref()?,
        &rules,
        &mut inspect::FileCache::default(),
    ))
}

/// `execguard setup ENGINE [--dry-run] [--remove]`.
pub fn setup(
    engine: crate::setup::Engine,
    layout: &crate::setup::Layout,
    dry_run: bool,
    remove: bool,
) -> Result<()> {
    let changes = if remove {
        crate::setup::plan_removal(engine, layout)?
    } else {
        crate::setup::plan(engine, layout)?
    };
    if dry_run {
        for c in &changes {
            let state = match (&c.before, &c.content) {
                _ if c.is_noop() => "unchanged",
                (None, None) => "absent",
                (Some(_), None) => "would be removed",
                (Some(_), Some(_)) => "would be changed",
                (None, Some(_)) => "would be created",
            };
            println!(
                "== {} ({state})\n{}",
                c.path.display(),
                c.content.as_deref().unwrap_or("")
            );
        }
        println!("(dry run: nothing written)");
        return Ok(());
    }
    let written = crate::setup::apply(&changes)?;
    for c in &changes {
        let state = match (written.contains(&c.path), &c.content) {
            (true, Some(_)) => "written",
            (true, None) => "removed",
            (false, _) if remove => "nothing of execguard's",
            (false, _) => "already set up",
        };
        println!("{}: {state}", c.path.display());
    }
    println!("next: {}", engine.next_step());
    Ok(())
}

/// `execguard report`: writes the summary of the event files to stdout; true when `fail_on`
/// was reached.
pub fn report(
    format: crate::report::Format,
    fail_on: Option<crate::report::FailOn>,
    events: &[PathBuf],
) -> Result<bool> {
    let summary = crate::report::summarize(events, fail_on)?;
    let mut out = std::io::stdout().lock();
    out.write_all(summary.render(format).as_bytes())?;
    out.flush()?;
    Ok(summary.failed())
}
