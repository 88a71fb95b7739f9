//! The policy engine: from an inspected exec and a container's settings to a verdict. No I/O.
//!
//! Fail-safe rule, per mode, when an exec cannot be inspected:
//! - the path does not resolve: the kernel's exec fails the same way, so enforce answers that
//!   errno itself (closing the window in which the path could appear) and audit lets the kernel
//!   answer; no event;
//! - the target's memory cannot be read because a pointer is bad: the kernel would fail with
//!   `EFAULT`; enforce answers `EFAULT`, audit lets the kernel answer; no event;
//! - anything else (memory unreadable for another reason, the file unreadable): enforce denies
//!   with the configured errno, audit lets the exec run; both log `inspection_failed`.

pub(crate) mod allow;

use nix::errno::Errno;

use crate::config::{AllowRule, EnforceConfig, RuleOverrides};
use crate::inspect::allow::Judgement;
use crate::inspect::{Finding, InspectError};
use crate::vocab::{Importance, Mode, Rule};

/// The answer to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Let the exec proceed.
    Continue,
    /// Fail the exec with this errno.
    Deny(i32),
}

/// A container's settings, as the policy sees them.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub mode: Mode,
    pub enforce: EnforceConfig,
    pub rules: RuleOverrides,
    /// The `[[allow]]` rules that apply to this container.
    pub allow: Vec<AllowRule>,
}

impl Action {
    /// What an event says was done.
    pub(crate) fn outcome(self) -> crate::vocab::Outcome {
        match self {
            Action::Continue => crate::vocab::Outcome::Allowed,
            Action::Deny(_) => crate::vocab::Outcome::Denied,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub action: Action,
    /// The event to write, with its importance, if any.
    pub event: Option<(Rule, Importance)>,
}

impl Verdict {
    const CONTINUE: Verdict = Verdict {
        action: Action::Continue,
        event: None,
    };
}

/// What the `[[allow]]` rules say of a finding, as far as the caller could look.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Allow<'a> {
    /// No rule could exempt it (or nothing was found).
    NoRule,
    /// A rule could: the image checkpoint judges it, on the file the loader maps, and writes
    /// the event; the exec checkpoint lets it go on without one.
    JudgedLater,
    /// What the rules said of the file.
    Judged(&'a Judgement),
}

impl<'a> Allow<'a> {
    /// At the exec checkpoint: whether a rule could exempt `finding`, judged later.
    pub(crate) fn at_exec(finding: Option<&Finding>, s: &Settings) -> Allow<'a> {
        if finding.is_some_and(|f| allow::may_exempt(f, s)) {
            Allow::JudgedLater
        } else {
            Allow::NoRule
        }
    }

    /// Where the file was judged (the image checkpoint, `explain`): `None` when no rule could
    /// apply.
    pub(crate) fn judged(judgement: Option<&'a Judgement>) -> Allow<'a> {
        judgement.map_or(Allow::NoRule, Allow::Judged)
    }
}

/// What is done with an exec: the answer and the event, with the event's reason and the rule
/// that exempted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub verdict: Verdict,
    /// Why, for the event: the finding's reason with what the `[[allow]]` rules said, or the
    /// inspection's error.
    pub reason: String,
    /// The `[[allow]]` rule that exempted the run (the event is written whatever `[events]
    /// min_importance` is, and the process is not told).
    pub allow_rule: Option<String>,
}

/// The decision, for both checkpoints and `explain`: what inspection found (nothing, a
/// finding, or an error), what the `[[allow]]` rules say of it, and the container's mode,
/// rules and enforce settings give the verdict. No I/O.
pub(crate) fn decide(
    inspected: Result<Option<&Finding>, &InspectError>,
    allow: Allow,
    s: &Settings,
) -> Decision {
    let finding = match inspected {
        Err(e) => {
            return Decision {
                verdict: on_error(e, s),
                reason: e.to_string(),
                allow_rule: None,
            }
        }
        Ok(None) => {
            return Decision {
                verdict: Verdict::CONTINUE,
                reason: String::new(),
                allow_rule: None,
            }
        }
        Ok(Some(f)) => f,
    };
    let (verdict, reason, allow_rule) = match allow {
        Allow::NoRule => (for_rule(finding.rule, s), finding.reason.clone(), None),
        Allow::JudgedLater => (Verdict::CONTINUE, String::new(), None),
        Allow::Judged(Judgement::Exempt(e)) => (
            exempted(finding.rule, s),
            format!(
                "{}; exempted by [[allow]] {:?}: the program is {}",
                finding.reason, e.rule, e.basis
            ),
            Some(e.rule.clone()),
        ),
        Allow::Judged(Judgement::NotExempt(why)) => (
            for_rule(finding.rule, s),
            format!("{}; no [[allow]] rule exempts it: {why}", finding.reason),
            None,
        ),
    };
    Decision {
        // Mode off: no event, so no exemption to show either.
        allow_rule: allow_rule.filter(|_| verdict.event.is_some()),
        verdict,
        reason,
    }
}

/// The verdict for a detection of `rule` that no `[[allow]]` rule exempts.
pub(crate) fn for_rule(rule: Rule, s: &Settings) -> Verdict {
    if s.mode == Mode::Off {
        return Verdict::CONTINUE;
    }
    let importance = s.rules.importance(rule);
    let deny = s.mode == Mode::Enforce && importance >= s.enforce.min_importance;
    Verdict {
        action: if deny {
            Action::Deny(s.enforce.errno.0)
        } else {
            Action::Continue
        },
        event: Some((rule, importance)),
    }
}

/// The verdict for a finding that an `[[allow]]` rule exempts: it runs, and the event says so
/// (whatever `[events] min_importance` is, the caller writes it).
fn exempted(rule: Rule, s: &Settings) -> Verdict {
    if s.mode == Mode::Off {
        return Verdict::CONTINUE;
    }
    Verdict {
        action: Action::Continue,
        event: Some((rule, s.rules.importance(rule))),
    }
}

/// The verdict for an exec that could not be inspected (see the module's fail-safe rule).
fn on_error(err: &InspectError, s: &Settings) -> Verdict {
    let enforce = s.mode == Mode::Enforce;
    match err {
        InspectError::Gone => Verdict::CONTINUE,
        InspectError::Resolve { errno } => Verdict {
            action: if enforce {
                Action::Deny(*errno as i32)
            } else {
                Action::Continue
            },
            event: None,
        },
        InspectError::ReadTarget {
            errno: Errno::EFAULT,
            ..
        } => Verdict {
            action: if enforce {
                Action::Deny(libc::EFAULT)
            } else {
                Action::Continue
            },
            event: None,
        },
        InspectError::ReadTarget { .. } | InspectError::File { .. } | InspectError::Open { .. } => {
            on_unknown(s)
        }
    }
}

/// The verdict for an exec whose content is unknown: it could not be read, or the worker that
/// received it died before recording it. The mode's fail-safe rule: deny in enforce mode,
/// allow in audit mode, an `inspection_failed` event in both.
pub(crate) fn on_unknown(s: &Settings) -> Verdict {
    if s.mode == Mode::Off {
        return Verdict::CONTINUE;
    }
    let rule = Rule::InspectionFailed;
    Verdict {
        action: if s.mode == Mode::Enforce {
            Action::Deny(s.enforce.errno.0)
        } else {
            Action::Continue
        },
        event: Some((rule, s.rules.importance(rule))),
    }
}

#[cfg(test)]
mod tests;
