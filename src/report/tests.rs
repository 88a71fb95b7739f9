//! Unit tests of `report.rs`.

use super::*;

fn event(container: &str, action: &str, importance: &str, reason: &str) -> String {
    serde_json::json!({
        "event": "binary_executed_by_loader", "action": action, "importance": importance,
        "reason": reason, "container": {"id": container},
        "exec": {"path": "/lib64/ld-linux-x86-64.so.2"},
        "loader": {"path": "/lib64/ld-linux-x86-64.so.2", "program": "/tmp/payload"},
    })
    .to_string()
}

fn summary(text: &str, fail_on: Option<FailOn>) -> Summary {
    let mut s = Summary::default();
    s.read(text.as_bytes(), "events.json", fail_on).unwrap();
    s
}

#[test]
fn counts_distinct_findings_and_malformed_lines() {
    let text = format!(
        "{}\n{}\nnot json\n\n{}\n{{\"no\":\"event\"}}\n",
        event("c1", "denied", "critical", "r"),
        event("c1", "denied", "critical", "r"),
        event("c2", "allowed", "low", "q"),
    );
    let s = summary(&text, Some(FailOn::Denied));
    assert_eq!(s.events, 3);
    assert_eq!(s.findings.len(), 2);
    assert_eq!(s.findings[0].count, 2);
    assert_eq!(s.findings[0].key.program, "/tmp/payload");
    assert_eq!(s.malformed_lines, 2);
    assert_eq!(s.malformed_at, ["events.json:3", "events.json:6"]);
    assert!(s.failed());
    assert!(!summary(&text, Some(FailOn::Importance(Importance::High)))
        .findings
        .is_empty());
    let audit_only = event("c2", "allowed", "high", "q");
    assert!(summary(&audit_only, Some(FailOn::Importance(Importance::High))).failed());
    assert!(!summary(&audit_only, Some(FailOn::Importance(Importance::Critical))).failed());
    assert!(!summary(&audit_only, Some(FailOn::Denied)).failed());
    // A run an [[allow]] rule exempted is not a finding to fail on.
    let exempted = audit_only.replacen('{', "{\"allow_rule\":\"vendor\",", 1);
    assert!(!summary(&exempted, Some(FailOn::Importance(Importance::High))).failed());
    assert_eq!(summary(&exempted, None).events, 1);
}

#[test]
fn a_line_too_long_is_skipped_not_kept() {
    let long = "x".repeat(usize::try_from(MAX_LINE).unwrap() + 10);
    let text = format!("{long}\n{}\n", event("c", "denied", "critical", ""));
    let s = summary(&text, None);
    assert_eq!((s.events, s.malformed_lines), (1, 1));
}

/// Issue 25: a line `report` cannot read whole fails `--fail-on` (and is named), whatever
/// made it unreadable; without `--fail-on` it is only counted.
#[test]
fn an_unreadable_line_fails_fail_on() {
    let long = format!(
        "{{\"event\":\"binary_executed_by_loader\",\"x\":\"{}\"}}",
        "x".repeat(usize::try_from(MAX_LINE).unwrap())
    );
    let known = event("c", "allowed", "low", "");
    for bad in [
        long.as_str(),
        "{\"event\":\"binary_executed_by_loader\",",
        &known.replace("binary_executed_by_loader", "future_event"),
        &known.replace("\"low\"", "\"severe\""),
        &known.replace("\"allowed\"", "\"ignored\""),
    ] {
        let text = format!("{known}\n{bad}\n");
        let s = summary(&text, Some(FailOn::Importance(Importance::Critical)));
        assert!(s.failed(), "{}", &bad[..bad.len().min(200)]);
        assert_eq!(s.malformed_at, ["events.json:2"]);
        let md = s.render(Format::Markdown);
        assert!(
            md.contains("events.json:2") && md.contains("each fails --fail-on"),
            "{md}"
        );
        assert!(s
            .render(Format::Github)
            .contains("::error title=execguard report::"));
        assert!(!summary(&text, None).failed());
    }
    assert!(!summary(&known, Some(FailOn::Importance(Importance::Critical))).failed());
}

#[test]
fn markdown_escapes_html_and_markdown() {
    let mut text = event(
        "c",
        "denied",
        "critical",
        "<img src=x onerror=alert(1)> & `code` *b* [l](u)",
    );
    text = text.replace("/tmp/payload", "/tmp/<script>`x`|y");
    let md = summary(&text, None).render(Format::Markdown);
    assert!(!md.contains('<') && !md.contains('>'), "{md}");
    assert!(
        md.contains("&lt;img src=x onerror=alert(1)&gt; &amp; \\`code\\` \\*b\\* \\[l\\](u)"),
        "{md}"
    );
    assert!(md.contains("/tmp/&lt;script&gt;\\`x\\`\\|y"), "{md}");
}

#[test]
fn renderings_escape_what_they_must() {
    let text = event("c|1", "denied", "critical", "a\nb % c | d");
    let s = summary(&text, None);
    let md = s.render(Format::Markdown);
    assert!(md.contains("c\\|1") && md.contains("a b % c \\| d"), "{md}");
    let gh = s.render(Format::Github);
    assert_eq!(gh.lines().count(), 1, "{gh}");
    assert!(
        gh.starts_with("::error title=execguard%3A binary_executed_by_loader (denied)::"),
        "{gh}"
    );
    assert!(gh.contains("a%0Ab %25 c"), "{gh}");
    let sarif: serde_json::Value = serde_json::from_str(&s.render(Format::Sarif)).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert_eq!(
        sarif["runs"][0]["results"][0]["ruleId"],
        "binary_executed_by_loader"
    );
    assert_eq!(sarif["runs"][0]["results"][0]["level"], "error");
    let json: serde_json::Value = serde_json::from_str(&s.render(Format::Json)).unwrap();
    assert_eq!(json["findings"][0]["count"], 1);
}
