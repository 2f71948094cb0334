//! Findings as compiler-style text, JSON, and SARIF 2.1.0 for code scanning.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use serde_sarif::sarif::{
    ArtifactLocation, Location as SarifLocation, Message, MultiformatMessageString,
    PhysicalLocation, PropertyBag, Region, ReportingConfiguration, ReportingDescriptor,
    Result as SarifResult, ResultLevel, Run, Sarif, Tool, ToolComponent, SCHEMA_URL,
};

use super::{Finding, Rule, Severity, RULES};

/// `file:line:col: warning[rule-id]: message`, one line per finding, in the order given (sorted by
/// [`super::lint`]). A finding whose object could not be found in the text has `file:` alone.
pub fn to_text(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        match f.position {
            Some(p) => out.push_str(&format!("{}:{}:{}: ", f.file, p.line, p.column)),
            None => out.push_str(&format!("{}: ", f.file)),
        }
        out.push_str(&format!("{}[{}]: {}\n", f.severity(), f.rule.id, f.message));
    }
    out
}

/// `3 warnings and 1 note`, `1 warning`, `no findings`.
pub fn summary(findings: &[Finding]) -> String {
    let count = |s: Severity| findings.iter().filter(|f| f.severity() == s).count();
    let parts: Vec<String> = [Severity::Warning, Severity::Note]
        .into_iter()
        .map(|s| (s, count(s)))
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("{n} {s}{}", if n == 1 { "" } else { "s" }))
        .collect();
    if parts.is_empty() {
        "no findings".to_string()
    } else {
        parts.join(" and ")
    }
}

/// `{"findings": [{"rule", "severity", "message", "file", "line", "column", "object", "kind",
/// "field"}]}`; `line` and `column` are null for a finding that could not be placed.
pub fn to_json(findings: &[Finding]) -> Value {
    let findings: Vec<Value> = findings
        .iter()
        .map(|f| {
            json!({
                "rule": f.rule.id,
                "severity": f.severity().as_str(),
                "message": f.message,
                "file": f.file,
                "line": f.position.map(|p| p.line),
                "column": f.position.map(|p| p.column),
                "object": f.object_name(),
                "kind": f.kind.as_str(),
                "field": f.field,
            })
        })
        .collect();
    json!({ "findings": findings })
}

/// The tool named in SARIF's `runs[0].tool.driver`.
#[derive(Debug, Clone)]
pub struct SarifTool {
    /// `policyc`.
    pub name: String,
    /// The tool's version.
    pub version: String,
    /// Where the tool is documented, if known (an absolute URI).
    pub information_uri: Option<String>,
}

/// A SARIF 2.1.0 log of one run, as GitHub code scanning reads it: the driver with every rule
/// (id, name, descriptions, help, default level), and one result per finding with `ruleId`,
/// `ruleIndex`, `level`, the message, and a physical location whose URI is relative to `base`
/// (the directory the paths were given from; see [`artifact_uri`]) and whose region is the
/// finding's line and column (counted in Unicode code points: `columnKind`). Each result's
/// `partialFingerprints` names the rule, file, object and field, so that an alert is followed
/// across edits that move lines.
pub fn to_sarif(findings: &[Finding], tool: &SarifTool, base: Option<&Path>) -> Sarif {
    let rules: Vec<ReportingDescriptor> = RULES.iter().map(|r| descriptor(r)).collect();
    let driver = match &tool.information_uri {
        Some(uri) => ToolComponent::builder()
            .name(tool.name.clone())
            .version(tool.version.clone())
            .information_uri(uri.clone())
            .rules(rules)
            .build(),
        None => ToolComponent::builder()
            .name(tool.name.clone())
            .version(tool.version.clone())
            .rules(rules)
            .build(),
    };
    let results: Vec<SarifResult> = findings.iter().map(|f| result(f, base)).collect();
    let run = Run::builder()
        .tool(Tool::builder().driver(driver).build())
        .column_kind(json!("unicodeCodePoints"))
        .results(results)
        .build();
    Sarif::builder()
        .schema(SCHEMA_URL.to_string())
        .version(json!("2.1.0"))
        .runs(vec![run])
        .build()
}

fn level(severity: Severity) -> ResultLevel {
    match severity {
        Severity::Warning => ResultLevel::Warning,
        Severity::Note => ResultLevel::Note,
    }
}

fn descriptor(rule: &Rule) -> ReportingDescriptor {
    ReportingDescriptor::builder()
        .id(rule.id)
        .name(rule.name)
        .short_description(
            MultiformatMessageString::builder()
                .text(rule.summary)
                .build(),
        )
        .full_description(
            MultiformatMessageString::builder()
                .text(rule.description)
                .build(),
        )
        .help(
            MultiformatMessageString::builder()
                .text(rule.help)
                .markdown(rule.help)
                .build(),
        )
        .default_configuration(
            ReportingConfiguration::builder()
                .level(json!(rule.severity.as_str()))
                .build(),
        )
        .build()
}

fn result(finding: &Finding, base: Option<&Path>) -> SarifResult {
    let uri = artifact_uri(&finding.file, base);
    let physical = match finding.position {
        Some(p) => PhysicalLocation::builder()
            .artifact_location(ArtifactLocation::builder().uri(uri.clone()).build())
            .region(
                Region::builder()
                    .start_line(p.line as i64)
                    .start_column(p.column as i64)
                    .build(),
            )
            .build(),
        None => PhysicalLocation::builder()
            .artifact_location(ArtifactLocation::builder().uri(uri.clone()).build())
            .build(),
    };
    let fingerprint = format!(
        "{}:{uri}:{}/{}:{}",
        finding.rule.id,
        finding.kind.as_str(),
        finding.object_name(),
        finding.field
    );
    let properties = PropertyBag::builder()
        .additional_properties(BTreeMap::from([
            ("object".to_string(), json!(finding.object_name())),
            ("kind".to_string(), json!(finding.kind.as_str())),
            ("field".to_string(), json!(finding.field)),
        ]))
        .build();
    let builder = SarifResult::builder()
        .rule_id(finding.rule.id)
        .level(level(finding.severity()))
        .message(Message::builder().text(finding.message.clone()).build())
        .locations(vec![SarifLocation::builder()
            .physical_location(physical)
            .build()])
        .partial_fingerprints(BTreeMap::from([(
            "nftpolicyFinding/v1".to_string(),
            fingerprint,
        )]))
        .properties(properties);
    match finding.rule.index() {
        Some(index) => builder.rule_index(index as i64).build(),
        None => builder.build(),
    }
}

/// A file name as a SARIF artifact URI: relative (forward slashes, no `./`, percent-encoded) for a
/// relative path, or for an absolute path under `base`; `file://` and the absolute path otherwise.
/// Standard input, `<stdin>`, becomes `%3Cstdin%3E`: a relative reference that names no file of
/// the repository (code scanning requires a URI on every result, and refuses URIs of other schemes
/// than `file`).
pub fn artifact_uri(file: &str, base: Option<&Path>) -> String {
    let path = Path::new(file);
    let relative = match base {
        Some(base) if path.is_absolute() => path.strip_prefix(base).ok(),
        _ => None,
    };
    let (prefix, text) = match relative {
        Some(r) => ("", r.to_string_lossy().into_owned()),
        None if path.is_absolute() => ("file://", file.to_string()),
        None => ("", file.to_string()),
    };
    let text = if std::path::MAIN_SEPARATOR == '\\' {
        text.replace('\\', "/")
    } else {
        text
    };
    let segments: Vec<&str> = text
        .split('/')
        .enumerate()
        .filter(|(i, s)| *s != "." && !(s.is_empty() && *i > 0))
        .map(|(_, s)| s)
        .collect();
    let mut uri = prefix.to_string();
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            uri.push('/');
        }
        for b in segment.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                uri.push(char::from(b));
            } else {
                uri.push_str(&format!("%{b:02X}"));
            }
        }
    }
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_relative_with_forward_slashes_and_encoded() {
        assert_eq!(
            artifact_uri("fixtures/lint/a.yaml", None),
            "fixtures/lint/a.yaml"
        );
        assert_eq!(artifact_uri("./fixtures/./a.yaml", None), "fixtures/a.yaml");
        assert_eq!(artifact_uri("a dir/b#1.yaml", None), "a%20dir/b%231.yaml");
        assert_eq!(artifact_uri("<stdin>", None), "%3Cstdin%3E");
        assert_eq!(artifact_uri("../up.yaml", None), "../up.yaml");
        assert_eq!(
            artifact_uri("/repo/k8s/np.yaml", Some(Path::new("/repo"))),
            "k8s/np.yaml"
        );
        assert_eq!(
            artifact_uri("/elsewhere/np.yaml", Some(Path::new("/repo"))),
            "file:///elsewhere/np.yaml"
        );
    }
}
