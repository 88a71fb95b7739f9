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
use crate::inspect::InspectError;
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

/// The verdict for an exec that was inspected; `rule` is the detection, if any.
pub(crate) fn decide(rule: Option<Rule>, s: &Settings) -> Verdict {
    let Some(rule) = rule else {
        return Verdict::CONTINUE;
    };
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
pub(crate) fn exempted(rule: Rule, s: &Settings) -> Verdict {
    if s.mode == Mode::Off {
        return Verdict::CONTINUE;
    }
    Verdict {
        action: Action::Continue,
        event: Some((rule, s.rules.importance(rule))),
    }
}

/// The verdict for an exec that could not be inspected (see the module's fail-safe rule).
pub(crate) fn on_error(err: &InspectError, s: &Settings) -> Verdict {
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
mod tests {
    use super::*;
    use crate::vocab::Errno as CfgErrno;

    fn settings(mode: Mode, min: Importance) -> Settings {
        Settings {
            mode,
            enforce: EnforceConfig {
                min_importance: min,
                errno: CfgErrno(libc::EACCES),
            },
            rules: RuleOverrides::default(),
            allow: Vec::new(),
        }
    }

    fn all_importances() -> impl Iterator<Item = Importance> {
        <Importance as strum::IntoEnumIterator>::iter()
    }

    #[test]
    fn audit_never_denies() {
        for rule in Rule::iter() {
            for min in all_importances() {
                let v = decide(Some(rule), &settings(Mode::Audit, min));
                assert_eq!(v.action, Action::Continue);
                assert_eq!(v.event.unwrap().0, rule);
            }
        }
    }

    #[test]
    fn enforce_denies_exactly_at_or_above_the_threshold() {
        for rule in Rule::iter() {
            for min in all_importances() {
                let v = decide(Some(rule), &settings(Mode::Enforce, min));
                let imp = rule.default_importance();
                assert_eq!(
                    v.action == Action::Deny(libc::EACCES),
                    imp >= min,
                    "{rule:?} {min:?}"
                );
            }
        }
    }

    #[test]
    fn loader_queries_are_never_denied_by_default() {
        let v = decide(
            Some(Rule::LoaderQuery),
            &settings(Mode::Enforce, Importance::Critical),
        );
        assert_eq!(v.action, Action::Continue);
        assert!(v.event.unwrap().1 <= Importance::Low);
    }

    #[test]
    fn no_finding_no_event() {
        for mode in [Mode::Audit, Mode::Enforce, Mode::Off] {
            assert_eq!(
                decide(None, &settings(mode, Importance::Info)),
                Verdict::CONTINUE
            );
        }
    }

    #[test]
    fn errors_follow_the_fail_safe_rule() {
        let audit = settings(Mode::Audit, Importance::Critical);
        let enforce = settings(Mode::Enforce, Importance::Critical);
        let missing = InspectError::Resolve {
            errno: Errno::ENOENT,
        };
        assert_eq!(on_error(&missing, &audit), Verdict::CONTINUE);
        assert_eq!(
            on_error(&missing, &enforce).action,
            Action::Deny(libc::ENOENT)
        );
        let unreadable = InspectError::ReadTarget {
            what: "argv",
            errno: Errno::EPERM,
        };
        let v = on_error(&unreadable, &audit);
        assert_eq!(v.action, Action::Continue);
        assert_eq!(v.event.unwrap().0, Rule::InspectionFailed);
        assert_eq!(
            on_error(&unreadable, &enforce).action,
            Action::Deny(libc::EACCES)
        );
        assert_eq!(on_error(&InspectError::Gone, &enforce), Verdict::CONTINUE);
    }
}
