//! Events cut to size: a line written whole within [`MAX_EVENT_LINE`] (so `execguard report`
//! always reads it), and an event kept in memory until it is written (the rate limit's folded
//! and held ones) within a few KiB.

use super::{lossy, ContainerInfo, Event, ExecInfo, LoaderInfo, ProcessInfo};
use crate::vocab::{Importance, Mode, Outcome, Stage};

/// The longest event line written, newline excluded: an argv of 128 arguments of 4096 bytes,
/// each byte a control character that JSON writes as `\u00XX`, would be 3 MiB. Longer events
/// are cut ([`cut_to_fit`]) so that every line stays readable whole by `execguard report`
/// (whose cap, 1 MiB, is above this one).
pub(crate) const MAX_EVENT_LINE: usize = 64 * 1024;
/// Characters kept of a string field that is cut, before [`CUT`].
const CUT_FIELD_CHARS: usize = 1024;
/// What ends a cut field.
pub(crate) const CUT: &str = "...[cut]";

/// Cuts an event (as JSON) until it serializes within [`MAX_EVENT_LINE`]: first its argv
/// (each argument to [`CUT_FIELD_CHARS`], `argv_truncated` set), then every string field the
/// same way, then arguments (and then the loader's options) dropped from the end. Each cut
/// string ends with [`CUT`].
pub(crate) fn cut_to_fit(v: &mut serde_json::Value) {
    let fits =
        |v: &serde_json::Value| serde_json::to_vec(v).map_or(true, |l| l.len() <= MAX_EVENT_LINE);
    if let Some(exec) = v.get_mut("exec").and_then(serde_json::Value::as_object_mut) {
        if let Some(argv) = exec
            .get_mut("argv")
            .and_then(serde_json::Value::as_array_mut)
        {
            argv.iter_mut().for_each(cut_string);
        }
        exec.insert("argv_truncated".into(), true.into());
    }
    if !fits(v) {
        cut_strings(v);
    }
    for list in ["/exec/argv", "/loader/options"] {
        while !fits(v) {
            let Some(items) = v
                .pointer_mut(list)
                .and_then(serde_json::Value::as_array_mut)
                .filter(|a| !a.is_empty())
            else {
                break;
            };
            items.pop();
        }
    }
}

fn cut_string(s: &mut serde_json::Value) {
    if let serde_json::Value::String(text) = s {
        if let Some((at, _)) = text.char_indices().nth(CUT_FIELD_CHARS) {
            text.truncate(at);
            text.push_str(CUT);
        }
    }
}

fn cut_strings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(_) => cut_string(v),
        serde_json::Value::Array(a) => a.iter_mut().for_each(cut_strings),
        serde_json::Value::Object(o) => o.values_mut().for_each(cut_strings),
        _ => {}
    }
}

/// Bytes of arguments (and of loader options) an event kept in memory holds at most.
const KEPT_LIST_BYTES: usize = 4096;

impl Event {
    /// Cuts what the event holds from the container to what is worth keeping in memory until
    /// it is written (a folded or held event): each string to [`CUT_FIELD_CHARS`], argv and
    /// the loader's options to [`KEPT_LIST_BYTES`] in all, each cut marked with [`CUT`].
    pub(crate) fn cut_to_keep(&mut self) {
        fn cut(s: &mut String) {
            if let Some((at, _)) = s.char_indices().nth(CUT_FIELD_CHARS) {
                s.truncate(at);
                s.push_str(CUT);
                // What is kept is what counts against the budget, not the capacity read.
                s.shrink_to_fit();
            }
        }
        fn cut_list(items: &mut Vec<String>) -> bool {
            let mut total = 0;
            let mut cut_any = false;
            for (i, item) in items.iter_mut().enumerate() {
                let before = item.len();
                cut(item);
                cut_any |= item.len() != before;
                total += item.len();
                if total > KEPT_LIST_BYTES {
                    items.truncate(i);
                    items.shrink_to_fit();
                    return true;
                }
            }
            cut_any
        }
        cut(&mut self.reason);
        if let Some(x) = &mut self.exec {
            cut(&mut x.path);
            if let Some(r) = &mut x.resolved {
                cut(r);
            }
            x.argv_truncated |= cut_list(&mut x.argv);
        }
        if let Some(l) = &mut self.loader {
            cut(&mut l.path);
            if let Some(p) = &mut l.program {
                cut(p);
            }
            cut_list(&mut l.options);
        }
    }

    /// About the bytes the event holds on the heap (its strings), for the keeper's budget.
    pub(crate) fn kept_bytes(&self) -> usize {
        let exec = self.exec.as_ref().map_or(0, |x| {
            x.path.len()
                + x.resolved.as_ref().map_or(0, String::len)
                + x.argv.iter().map(|a| a.len() + 24).sum::<usize>()
        });
        let loader = self.loader.as_ref().map_or(0, |l| {
            l.path.len()
                + l.program.as_ref().map_or(0, String::len)
                + l.options.iter().map(|o| o.len() + 24).sum::<usize>()
        });
        std::mem::size_of::<Self>() + self.reason.len() + self.time.len() + exec + loader
    }
}

/// The fuzz target's entry for the cuts of hostile events (`fuzz/fuzz_targets/event_cuts.rs`):
/// `data` split at NUL bytes gives the reason, the exec path, the loader's program and the
/// arguments (each byte that is not UTF-8 shown as U+FFFD, as the supervisor shows them).
/// Checks what the cuts promise: a written line within [`MAX_EVENT_LINE`] and valid JSON, and
/// a kept event within [`CUT_FIELD_CHARS`] per string and [`KEPT_LIST_BYTES`] of arguments.
pub fn fuzz_cuts(data: &[u8]) {
    let mut parts = data.split(|b| *b == 0).map(lossy);
    let mut ev = Event {
        time: String::new(),
        event: "binary_executed_by_loader",
        description: "",
        category: "",
        method: "",
        importance: Importance::Critical,
        mode: Mode::Audit,
        action: Outcome::Allowed,
        repeated: None,
        stage: Stage::Exec,
        errno: None,
        allow_rule: None,
        reason: parts.next().unwrap_or_default(),
        container: ContainerInfo { id: "c".into() },
        process: ProcessInfo { pid: 1 },
        exec: Some(ExecInfo {
            syscall: crate::vocab::Syscall::Execve,
            abi: crate::vocab::Abi::X86_64,
            path: parts.next().unwrap_or_default(),
            resolved: None,
            argv: Vec::new(),
            argv_truncated: false,
        }),
        syscall: None,
        loader: Some(LoaderInfo {
            path: String::new(),
            kind: "glibc",
            program: parts.next(),
            mode: "run",
            options: Vec::new(),
            via: "direct",
        }),
    };
    // Repeated so that a short input still makes a long event.
    let argv: Vec<String> = parts.collect();
    if let Some(x) = &mut ev.exec {
        for _ in 0..(256 / argv.len().max(1)).max(1) {
            x.argv.extend(argv.iter().cloned());
        }
    }
    let mut v = serde_json::to_value(&ev).expect("an event serializes");
    cut_to_fit(&mut v);
    let line = serde_json::to_vec(&v).expect("a cut event serializes");
    assert!(
        line.len() <= MAX_EVENT_LINE || v["exec"]["argv"].as_array().is_some_and(Vec::is_empty)
    );
    serde_json::from_slice::<serde_json::Value>(&line).expect("a cut line is JSON");
    ev.cut_to_keep();
    let x = ev.exec.as_ref().expect("exec");
    assert!(
        x.argv.iter().map(String::len).sum::<usize>()
            <= KEPT_LIST_BYTES + 4 * CUT_FIELD_CHARS + CUT.len()
    );
    assert!(ev.reason.chars().count() <= CUT_FIELD_CHARS + CUT.len());
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::event::tests::{test_event, Buffer};
    use crate::event::EventSink;
    use crate::vocab::{Abi, Syscall};

    /// The fuzz target's checks, on inputs a fuzzer would take a while to build.
    #[test]
    fn the_cuts_hold_for_long_and_hostile_inputs() {
        fuzz_cuts(b"");
        fuzz_cuts(&[b'\x01'; 70_000]);
        let mut many = Vec::new();
        for _ in 0..300 {
            many.extend_from_slice(&[b'\xff'; 5000]);
            many.push(0);
        }
        fuzz_cuts(&many);
    }

    /// Issue 25: 125 arguments of 4095 control characters made a 3 MB line that `report`
    /// skipped; now the line is cut to the cap, stays valid JSON, and says it was cut.
    #[test]
    fn an_oversized_event_is_cut_to_the_line_cap() {
        let mut ev = test_event("");
        ev.reason = "r".repeat(200_000);
        ev.exec = Some(ExecInfo {
            syscall: Syscall::Execve,
            abi: Abi::X86_64,
            path: "/lib64/ld-linux-x86-64.so.2".into(),
            resolved: None,
            argv: (0..125).map(|_| "\x01".repeat(4095)).collect(),
            argv_truncated: false,
        });
        let buf = std::sync::Arc::new(Mutex::new(Vec::new()));
        EventSink::from_writer(Box::new(Buffer(buf.clone())))
            .emit(&ev)
            .unwrap();
        let mut out = buf.lock().unwrap().clone();
        assert_eq!(out.pop(), Some(b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(out.len() <= MAX_EVENT_LINE, "{}", out.len());
        assert_eq!(v["exec"]["argv_truncated"], true);
        assert!(v["exec"]["argv"][0].as_str().unwrap().ends_with(CUT));
        assert!(v["reason"].as_str().unwrap().ends_with(CUT));
        assert_eq!(v["exec"]["path"], "/lib64/ld-linux-x86-64.so.2");
    }
}
