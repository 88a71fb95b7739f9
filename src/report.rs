//! `execguard report`: event files (several, concatenated, rotated and gzip-compressed ones
//! included) summed up for CI: Markdown for a job summary, GitHub workflow commands, SARIF
//! 2.1.0 for code scanning, or JSON; and whether a `--fail-on` threshold was reached.
//!
//! Streams: one line at a time, lines longer than [`MAX_LINE`] skipped, at most
//! [`MAX_FINDINGS`] distinct findings kept (the rest are counted), so a file of any size takes
//! constant memory. A line that cannot be read whole as an event (longer than the cap, not
//! JSON, or not an event this version knows: an unknown event name, importance or action) is
//! counted and named; with `--fail-on` it fails the report, since it could have been a finding.
//! The supervisor keeps its own lines under the cap (`event::MAX_EVENT_LINE`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_sarif::sarif;

use crate::vocab::{Importance, Rule};

/// Longer lines are not events (the supervisor cuts its own to `event::MAX_EVENT_LINE`).
const MAX_LINE: u64 = 1 << 20;
/// Distinct findings listed; more are counted.
const MAX_FINDINGS: usize = 1000;
/// Malformed lines named in the report; more are counted.
const MAX_MALFORMED_NAMED: usize = 5;

/// The output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Github,
    Sarif,
    Json,
}

/// What makes the report fail (exit status 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOn {
    /// Any denied exec.
    Denied,
    /// Any event at or above this importance, allowed or denied.
    Importance(Importance),
}

/// One distinct finding: the same container, event, action, program, loader and reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
struct Key {
    container: String,
    event: String,
    action: String,
    importance: String,
    program: String,
    loader: String,
    reason: String,
}

#[derive(Debug, Serialize)]
struct Finding {
    #[serde(flatten)]
    key: Key,
    count: u64,
}

/// What the event files hold, summed up.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    /// Events read (a rate-limited line counts as 1 + its `repeated`).
    events: u64,
    /// Events by event name and action.
    by_event: BTreeMap<String, BTreeMap<String, u64>>,
    findings: Vec<Finding>,
    /// Distinct findings beyond [`MAX_FINDINGS`], counted only.
    findings_not_listed: u64,
    /// Lines that could not be read whole as events (with `--fail-on`, each fails the report).
    malformed_lines: u64,
    /// `file:line` of the first malformed lines.
    malformed_at: Vec<String>,
    /// Whether `--fail-on` was reached.
    failed: bool,
    /// Whether `--fail-on` was given (then an unreadable line fails the report).
    #[serde(skip)]
    strict: bool,
    #[serde(skip)]
    index: HashMap<Key, usize>,
}

/// Why a report could not be made (a file that cannot be read; a malformed line is not one).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads every file (`-` is stdin; a `.gz` name is decompressed) into one summary.
pub(crate) fn summarize(
    paths: &[PathBuf],
    fail_on: Option<FailOn>,
) -> Result<Summary, ReportError> {
    let mut summary = Summary::default();
    for path in paths {
        let read_err = |source| ReportError::Read {
            path: path.clone(),
            source,
        };
        let input: Box<dyn Read> = if path == Path::new("-") {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::fs::File::open(path).map_err(read_err)?)
        };
        let input: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::read::MultiGzDecoder::new(input))
        } else {
            input
        };
        summary
            .read(BufReader::new(input), &path.display().to_string(), fail_on)
            .map_err(read_err)?;
    }
    Ok(summary)
}

/// Reads `input` as one event file and renders it in every format: the fuzz target's entry
/// (`fuzz/fuzz_targets/report.rs`), hostile bytes in, no panic out.
pub fn read_and_render(input: &[u8]) -> Vec<String> {
    let mut summary = Summary::default();
    let fail_on = Some(FailOn::Importance(Importance::High));
    if summary.read(input, "fuzz", fail_on).is_err() {
        return Vec::new();
    }
    [
        Format::Markdown,
        Format::Github,
        Format::Sarif,
        Format::Json,
    ]
    .into_iter()
    .map(|f| summary.render(f))
    .collect()
}

impl Summary {
    fn read(
        &mut self,
        mut input: impl BufRead,
        name: &str,
        fail_on: Option<FailOn>,
    ) -> std::io::Result<()> {
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            number += 1;
            let n = (&mut input).take(MAX_LINE).read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(());
            }
            if line.last() != Some(&b'\n') && u64::try_from(n).is_ok_and(|n| n >= MAX_LINE) {
                // Too long to be an event: skip the rest of it.
                input.skip_until(b'\n')?;
                self.malformed(name, number, fail_on);
                continue;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<serde_json::Value>(&line) {
                Ok(v) if is_event(&v) => self.add(&v, fail_on),
                _ => self.malformed(name, number, fail_on),
            }
        }
    }

    fn malformed(&mut self, name: &str, number: u64, fail_on: Option<FailOn>) {
        self.malformed_lines += 1;
        self.strict |= fail_on.is_some();
        self.failed |= fail_on.is_some();
        if self.malformed_at.len() < MAX_MALFORMED_NAMED {
            self.malformed_at.push(format!("{name}:{number}"));
        }
    }

    fn add(&mut self, v: &serde_json::Value, fail_on: Option<FailOn>) {
        let s = |p: &str| {
            v.pointer(p)
                .and_then(|x| x.as_str())
                .unwrap_or("")
                .to_owned()
        };
        let count = v
            .get("repeated")
            .and_then(|r| r.as_u64())
            .unwrap_or(0)
            .saturating_add(1);
        let program = match s("/loader/program") {
            p if p.is_empty() => s("/exec/path"),
            p => p,
        };
        let key = Key {
            container: s("/container/id"),
            event: s("/event"),
            action: s("/action"),
            importance: s("/importance"),
            program,
            loader: s("/loader/path"),
            reason: s("/reason"),
        };
        self.events = self.events.saturating_add(count);
        let by_action = self
            .by_event
            .entry(key.event.clone())
            .or_default()
            .entry(key.action.clone())
            .or_default();
        *by_action = by_action.saturating_add(count);
        let importance = serde_json::from_value::<Importance>(v["importance"].clone()).ok();
        self.failed |= match fail_on {
            None => false,
            Some(FailOn::Denied) => key.action == "denied",
            // A run an `[[allow]]` rule exempted is a sanctioned exception, not a finding.
            Some(FailOn::Importance(min)) => {
                v.get("allow_rule").is_none() && importance.is_some_and(|i| i >= min)
            }
        };
        if let Some(&i) = self.index.get(&key) {
            self.findings[i].count = self.findings[i].count.saturating_add(count);
        } else if self.findings.len() < MAX_FINDINGS {
            self.index.insert(key.clone(), self.findings.len());
            self.findings.push(Finding { key, count });
        } else {
            self.findings_not_listed += 1;
        }
    }

    pub(crate) fn failed(&self) -> bool {
        self.failed
    }

    pub(crate) fn render(&self, format: Format) -> String {
        match format {
            Format::Markdown => self.markdown(),
            Format::Github => self.github(),
            Format::Sarif => self.sarif(),
            Format::Json => serde_json::to_string_pretty(self).unwrap_or_default() + "\n",
        }
    }

    fn markdown(&self) -> String {
        let mut out = String::from("## execguard\n\n");
        let distinct = self.findings.len() as u64 + self.findings_not_listed;
        let _ = writeln!(
            out,
            "{} event(s), {} distinct finding(s){}.\n",
            self.events,
            distinct,
            if self.malformed_lines > 0 {
                format!(
                    ", {} line(s) that could not be read as events skipped ({}){}",
                    self.malformed_lines,
                    self.malformed_at.join(", "),
                    if self.strict {
                        ": each fails --fail-on"
                    } else {
                        ""
                    }
                )
            } else {
                String::new()
            }
        );
        if self.by_event.is_empty() {
            out.push_str("No events.\n");
            return out;
        }
        out.push_str("| event | allowed | denied |\n| --- | ---: | ---: |\n");
        for (event, actions) in &self.by_event {
            let n = |a: &str| actions.get(a).copied().unwrap_or(0);
            let _ = writeln!(out, "| `{event}` | {} | {} |", n("allowed"), n("denied"));
        }
        out.push_str(
            "\n| container | event | action | importance | program | loader | reason | count |\n",
        );
        out.push_str("| --- | --- | --- | --- | --- | --- | --- | ---: |\n");
        for f in &self.findings {
            let k = &f.key;
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {} | {} | {} | {} | {} |",
                md(short_id(&k.container)),
                md(&k.event),
                md(&k.action),
                md(&k.importance),
                md(&k.program),
                md(&k.loader),
                md(&k.reason),
                f.count
            );
        }
        if self.findings_not_listed > 0 {
            let _ = writeln!(
                out,
                "\n{} more distinct finding(s) not listed.",
                self.findings_not_listed
            );
        }
        out
    }

    fn github(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let k = &f.key;
            let command = match level(&k.importance) {
                sarif::ResultLevel::Error => "error",
                sarif::ResultLevel::Warning => "warning",
                _ => "notice",
            };
            let title = format!("execguard: {} ({})", k.event, k.action);
            let _ = writeln!(
                out,
                "::{command} title={}::{}",
                gh_property(&title),
                gh_data(&message(f))
            );
        }
        if self.malformed_lines > 0 {
            let _ = writeln!(
                out,
                "::{} title=execguard report::{}",
                if self.strict { "error" } else { "warning" },
                gh_data(&format!(
                    "{} line(s) that could not be read as events skipped ({})",
                    self.malformed_lines,
                    self.malformed_at.join(", ")
                ))
            );
        }
        out
    }

    fn sarif(&self) -> String {
        let rules: Vec<sarif::ReportingDescriptor> = Rule::iter()
            .map(|r| {
                sarif::ReportingDescriptor::builder()
                    .id(r.name())
                    .name(r.name())
                    .short_description(
                        sarif::MultiformatMessageString::builder()
                            .text(r.description())
                            .build(),
                    )
                    .build()
            })
            .collect();
        let results: Vec<sarif::Result> = self
            .findings
            .iter()
            .map(|f| {
                let k = &f.key;
                let mut props = BTreeMap::new();
                props.insert("container".to_owned(), serde_json::json!(k.container));
                props.insert("action".to_owned(), serde_json::json!(k.action));
                props.insert("importance".to_owned(), serde_json::json!(k.importance));
                props.insert("count".to_owned(), serde_json::json!(f.count));
                if !k.loader.is_empty() {
                    props.insert("loader".to_owned(), serde_json::json!(k.loader));
                }
                let result = sarif::Result::builder()
                    .rule_id(k.event.clone())
                    .level(level(&k.importance))
                    .message(sarif::Message::builder().text(message(f)).build())
                    .properties(
                        sarif::PropertyBag::builder()
                            .additional_properties(props)
                            .build(),
                    );
                // Code scanning shows a result at a location: the program, as a path inside
                // the container.
                let program = k.program.trim_start_matches('/');
                if program.is_empty() {
                    result.build()
                } else {
                    result
                        .locations(vec![sarif::Location::builder()
                            .physical_location(
                                sarif::PhysicalLocation::builder()
                                    .artifact_location(
                                        sarif::ArtifactLocation::builder().uri(program).build(),
                                    )
                                    .build(),
                            )
                            .build()])
                        .build()
                }
            })
            .collect();
        let driver = sarif::ToolComponent::builder()
            .name("execguard")
            .version(env!("CARGO_PKG_VERSION"))
            .information_uri("https://github.com/execguard/execguard")
            .rules(rules)
            .build();
        let run = sarif::Run::builder()
            .tool(sarif::Tool::builder().driver(driver).build())
            .results(results)
            .build();
        let log = sarif::Sarif::builder()
            .schema("https://json.schemastore.org/sarif-2.1.0.json")
            .version(serde_json::json!("2.1.0"))
            .runs(vec![run])
            .build();
        serde_json::to_string_pretty(&log).unwrap_or_default() + "\n"
    }
}

/// Whether a JSON line is an event this version can judge: a known event name, importance
/// and action.
fn is_event(v: &serde_json::Value) -> bool {
    let event = v.get("event").and_then(serde_json::Value::as_str);
    event.is_some_and(|e| Rule::iter().any(|r| r.name() == e))
        && serde_json::from_value::<Importance>(v["importance"].clone()).is_ok()
        && matches!(
            v.get("action").and_then(serde_json::Value::as_str),
            Some("allowed" | "denied")
        )
}

fn level(importance: &str) -> sarif::ResultLevel {
    match importance {
        "critical" | "high" => sarif::ResultLevel::Error,
        "medium" => sarif::ResultLevel::Warning,
        _ => sarif::ResultLevel::Note,
    }
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// One line saying what was found.
fn message(f: &Finding) -> String {
    let k = &f.key;
    let mut m = format!("{} in container {}", k.action, short_id(&k.container));
    if !k.reason.is_empty() {
        let _ = write!(m, ": {}", k.reason);
    }
    if f.count > 1 {
        let _ = write!(m, " ({} times)", f.count);
    }
    m
}

/// Text for a Markdown table cell (a GitHub job summary renders HTML in Markdown): no line
/// breaks; HTML's `&`, `<`, `>` as entities; Markdown's punctuation (`|` that would end the
/// cell, backticks, emphasis, links) backslash-escaped.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '`' | '|' | '*' | '_' | '[' | ']' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// GitHub workflow command data: `%`, CR and LF escaped.
fn gh_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A GitHub workflow command property: data escaping, plus `:` and `,`.
fn gh_property(s: &str) -> String {
    gh_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests;
