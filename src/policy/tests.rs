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
            let v = for_rule(rule, &settings(Mode::Audit, min));
            assert_eq!(v.action, Action::Continue);
            assert_eq!(v.event.unwrap().0, rule);
        }
    }
}

#[test]
fn enforce_denies_exactly_at_or_above_the_threshold() {
    for rule in Rule::iter() {
        for min in all_importances() {
            let v = for_rule(rule, &settings(Mode::Enforce, min));
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
    let v = for_rule(
        Rule::LoaderQuery,
        &settings(Mode::Enforce, Importance::Critical),
    );
    assert_eq!(v.action, Action::Continue);
    assert!(v.event.unwrap().1 <= Importance::Low);
}

#[test]
fn no_finding_no_event() {
    for mode in [Mode::Audit, Mode::Enforce, Mode::Off] {
        let d = decide(Ok(None), Allow::NoRule, &settings(mode, Importance::Info));
        assert_eq!(d.verdict, Verdict::CONTINUE);
        assert_eq!(d.allow_rule, None);
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

fn finding(rule: Rule) -> Finding {
    Finding {
        rule,
        reason: "a loader runs /tmp/p".to_owned(),
        loader: None,
    }
}

fn exempt() -> Judgement {
    Judgement::Exempt(crate::inspect::allow::Exemption {
        rule: "vendor tool".to_owned(),
        basis: "on a read-only mount".to_owned(),
    })
}

#[test]
fn a_finding_no_rule_exempts_is_judged_by_its_importance() {
    let f = finding(Rule::BinaryExecutedByLoader);
    let d = decide(
        Ok(Some(&f)),
        Allow::NoRule,
        &settings(Mode::Enforce, Importance::High),
    );
    assert_eq!(d.verdict.action, Action::Deny(libc::EACCES));
    assert_eq!(d.reason, "a loader runs /tmp/p");
    assert_eq!(d.allow_rule, None);
    let why = Judgement::NotExempt("the program is on a writable mount".to_owned());
    let d = decide(
        Ok(Some(&f)),
        Allow::Judged(&why),
        &settings(Mode::Enforce, Importance::High),
    );
    assert_eq!(d.verdict.action, Action::Deny(libc::EACCES));
    assert_eq!(
        d.reason,
        "a loader runs /tmp/p; no [[allow]] rule exempts it: the program is on a writable mount"
    );
}

#[test]
fn an_exempted_run_continues_with_an_event_naming_the_rule() {
    let f = finding(Rule::BinaryExecutedByLoader);
    let e = exempt();
    for mode in [Mode::Audit, Mode::Enforce] {
        let d = decide(
            Ok(Some(&f)),
            Allow::Judged(&e),
            &settings(mode, Importance::Info),
        );
        assert_eq!(d.verdict.action, Action::Continue, "{mode:?}");
        assert_eq!(
            d.verdict.event,
            Some((Rule::BinaryExecutedByLoader, Importance::Critical))
        );
        assert_eq!(d.allow_rule.as_deref(), Some("vendor tool"));
        assert!(d.reason.ends_with(
            "exempted by [[allow]] \"vendor tool\": the program is on a read-only mount"
        ));
    }
    let off = decide(
        Ok(Some(&f)),
        Allow::Judged(&e),
        &settings(Mode::Off, Importance::Info),
    );
    assert_eq!((off.verdict, off.allow_rule), (Verdict::CONTINUE, None));
}

#[test]
fn a_run_judged_later_goes_on_without_an_event_at_the_exec() {
    let f = finding(Rule::BinaryExecutedByLoader);
    let d = decide(
        Ok(Some(&f)),
        Allow::JudgedLater,
        &settings(Mode::Enforce, Importance::Info),
    );
    assert_eq!(d.verdict, Verdict::CONTINUE);
}

#[test]
fn an_error_is_judged_by_the_fail_safe_rule_with_its_message_as_reason() {
    let err = InspectError::ReadTarget {
        what: "argv",
        errno: Errno::EPERM,
    };
    let d = decide(
        Err(&err),
        Allow::NoRule,
        &settings(Mode::Enforce, Importance::Critical),
    );
    assert_eq!(d.verdict.action, Action::Deny(libc::EACCES));
    assert_eq!(d.verdict.event.unwrap().0, Rule::InspectionFailed);
    assert_eq!(d.reason, err.to_string());
}
