//! Policy files: which tools an agent may call, constraints on their arguments, and which
//! built-in detectors run. TOML, loaded with `serve --policy FILE`; without one the built-in
//! default ([`DEFAULT_POLICY`]) applies. Pure: no I/O beyond the text handed in.
//!
//! A file is a list of `[[section]]`s. A section applies to every agent, or to agent ids
//! matching one of its `agents` globs. The policy for an agent is every matching section
//! merged in file order: tool lists and argument rules add up, switches (`detectors.*`,
//! `loop_max_repeats`, `prompt_rules`) take the value of the last section that sets them.
//! Unknown keys are errors, so a typo never silently disables a rule. Errors name the line.

use std::ops::Range;

use globset::{Glob, GlobMatcher};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

/// The built-in policy: every detector on, loops blocked after 5 identical checks, limits read
/// from system prompts. Documented in the README ("Writing a policy").
pub const DEFAULT_POLICY: &str = "\
# runwarden's built-in policy: applies when serve gets no --policy.
[[section]]
loop_max_repeats = 5
prompt_rules = true
[section.detectors]
shell = true
sql = true
sensitive_paths = true
secrets = true
network = true
";

/// A policy error, with the 1-based line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The line of the offending text (1-based), when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for PolicyError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    section: Vec<SectionFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SectionFile {
    #[serde(default)]
    agents: Vec<Spanned<String>>,
    #[serde(default)]
    deny_tools: Vec<Spanned<String>>,
    allow_tools: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    require_approval: Vec<Spanned<String>>,
    loop_max_repeats: Option<Spanned<i64>>,
    prompt_rules: Option<bool>,
    #[serde(default)]
    trusted_tools: Vec<Spanned<String>>,
    untrusted_arguments: Option<Spanned<String>>,
    #[serde(default)]
    detectors: DetectorsFile,
    #[serde(default)]
    args: Vec<ArgFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectorsFile {
    shell: Option<bool>,
    sql: Option<bool>,
    sensitive_paths: Option<bool>,
    secrets: Option<bool>,
    network: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArgFile {
    tool: Spanned<String>,
    path: Spanned<String>,
    max: Option<f64>,
    min: Option<f64>,
    #[serde(default)]
    deny_patterns: Vec<Spanned<String>>,
    #[serde(default)]
    allow_patterns: Vec<Spanned<String>>,
    one_of: Option<Vec<toml::Value>>,
    email_domains: Option<Vec<String>>,
    url_domains: Option<Vec<String>>,
    path_roots: Option<Vec<Spanned<String>>>,
}

/// A tool-name or agent-id glob (`*`, `?`, `[…]`), with its source text.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    matcher: GlobMatcher,
}

impl Pattern {
    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A regular expression with its source text.
#[derive(Debug, Clone)]
pub struct Rx {
    /// The expression as written.
    pub text: String,
    /// The compiled expression.
    pub regex: Regex,
}

/// Constraints on one argument of matching tools.
#[derive(Debug, Clone)]
pub struct ArgRule {
    /// Which tools.
    pub tool: Pattern,
    /// The argument: a dotted path into the arguments object (`amount`, `payee.iban`).
    pub path: String,
    /// Numbers above block (`args.max`).
    pub max: Option<f64>,
    /// Numbers below block (`args.min`).
    pub min: Option<f64>,
    /// Strings matching any of these block (`args.deny_pattern`).
    pub deny_patterns: Vec<Rx>,
    /// Strings must match one of these (`args.allow_pattern`), when any is given.
    pub allow_patterns: Vec<Rx>,
    /// The value must equal one of these (`args.one_of`).
    pub one_of: Option<Vec<Value>>,
    /// E-mail addresses must be in one of these domains or their subdomains
    /// (`args.email_domain`).
    pub email_domains: Option<Vec<String>>,
    /// URLs must point into one of these domains or their subdomains (`args.url_domain`).
    pub url_domains: Option<Vec<String>>,
    /// File paths must lie under one of these roots, with no `..` (`args.path_root`).
    pub path_roots: Option<Vec<String>>,
}

/// Which built-in detectors run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detectors {
    /// `detect.shell`: destructive shell commands.
    pub shell: bool,
    /// `detect.sql`: destructive SQL.
    pub sql: bool,
    /// `detect.sensitive_path`: credentials and system secrets on disk.
    pub sensitive_paths: bool,
    /// `detect.secret`: keys and tokens in arguments.
    pub secrets: bool,
    /// `detect.network`: URLs reaching metadata endpoints or private networks.
    pub network: bool,
}

/// The policy in force for one agent.
#[derive(Debug, Clone)]
pub struct AgentPolicy {
    /// Tools that always block (`tool.deny`).
    pub deny_tools: Vec<Pattern>,
    /// When set, tools outside it block (`tool.not_allowed`).
    pub allow_tools: Option<Vec<Pattern>>,
    /// Tools that block unless approved (`tool.require_approval`).
    pub require_approval: Vec<Pattern>,
    /// Argument constraints (`args.*`).
    pub args: Vec<ArgRule>,
    /// Built-in detectors (`detect.*`).
    pub detectors: Detectors,
    /// Identical checks allowed per run before `loop.repeat` blocks.
    pub loop_max_repeats: u32,
    /// Whether limits are read from the system prompt (`prompt.*`).
    pub prompt_rules: bool,
    /// Tools whose outputs are trusted like user input (`context.*`).
    pub trusted_tools: Vec<Pattern>,
    /// Whether `context.untrusted_argument` blocks (default: warns).
    pub block_untrusted_arguments: bool,
}

impl Default for AgentPolicy {
    /// Nothing configured: every detector on, loops after 5, prompt rules on.
    fn default() -> Self {
        AgentPolicy {
            deny_tools: Vec::new(),
            allow_tools: None,
            require_approval: Vec::new(),
            args: Vec::new(),
            detectors: Detectors {
                shell: true,
                sql: true,
                sensitive_paths: true,
                secrets: true,
                network: true,
            },
            loop_max_repeats: 5,
            prompt_rules: true,
            trusted_tools: Vec::new(),
            block_untrusted_arguments: false,
        }
    }
}

struct Section {
    agents: Vec<Pattern>,
    deny_tools: Vec<Pattern>,
    allow_tools: Option<Vec<Pattern>>,
    require_approval: Vec<Pattern>,
    loop_max_repeats: Option<u32>,
    prompt_rules: Option<bool>,
    trusted_tools: Vec<Pattern>,
    block_untrusted_arguments: Option<bool>,
    detectors: DetectorsFile,
    args: Vec<ArgRule>,
}

/// A parsed, validated policy.
pub struct Policy {
    sections: Vec<Section>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Policy({} sections)", self.sections.len())
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::parse(DEFAULT_POLICY).unwrap_or(Policy {
            sections: Vec::new(),
        })
    }
}

fn line_of(text: &str, span: Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}

impl Policy {
    /// Parses and validates a policy file.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let file: File = toml::from_str(text).map_err(|e| PolicyError {
            line: e.span().map(|s| line_of(text, s)),
            message: e.message().trim().to_string(),
        })?;
        let err = |span: Range<usize>, message: String| PolicyError {
            line: Some(line_of(text, span)),
            message,
        };
        let glob = |s: &Spanned<String>| -> Result<Pattern, PolicyError> {
            Glob::new(s.get_ref())
                .map(|g| Pattern {
                    text: s.get_ref().clone(),
                    matcher: g.compile_matcher(),
                })
                .map_err(|e| err(s.span(), format!("bad glob {:?}: {e}", s.get_ref())))
        };
        let globs = |v: &[Spanned<String>]| v.iter().map(glob).collect::<Result<Vec<_>, _>>();
        let regex = |s: &Spanned<String>| -> Result<Rx, PolicyError> {
            Regex::new(s.get_ref())
                .map(|regex| Rx {
                    text: s.get_ref().clone(),
                    regex,
                })
                .map_err(|e| {
                    err(
                        s.span(),
                        format!("bad regular expression {:?}: {e}", s.get_ref()),
                    )
                })
        };
        let mut sections = Vec::new();
        for s in file.section {
            let loop_max_repeats = match &s.loop_max_repeats {
                Some(n) if (1..=1_000_000).contains(n.get_ref()) => Some(*n.get_ref() as u32),
                Some(n) => {
                    return Err(err(
                        n.span(),
                        "loop_max_repeats must be between 1 and 1000000".into(),
                    ));
                }
                None => None,
            };
            let mut args = Vec::new();
            for a in &s.args {
                let path = a.path.get_ref().trim().to_string();
                if path.is_empty() || path.split('.').any(str::is_empty) {
                    return Err(err(
                        a.path.span(),
                        format!("bad argument path {:?}", a.path.get_ref()),
                    ));
                }
                for (name, bound) in [("min", a.min), ("max", a.max)] {
                    if bound.is_some_and(|b| !b.is_finite()) {
                        return Err(err(
                            a.path.span(),
                            format!("{name} for argument {path} must be a finite number"),
                        ));
                    }
                }
                if let (Some(min), Some(max)) = (a.min, a.max)
                    && min > max
                {
                    return Err(err(
                        a.path.span(),
                        format!(
                            "min {min} is above max {max} for argument {path}: every value \
                             would be blocked"
                        ),
                    ));
                }
                let mut roots = None;
                if let Some(rs) = &a.path_roots {
                    let mut v = Vec::new();
                    for r in rs {
                        if !r.get_ref().starts_with('/') {
                            return Err(err(
                                r.span(),
                                format!("path root {:?} must be absolute", r.get_ref()),
                            ));
                        }
                        v.push(r.get_ref().trim_end_matches('/').to_string());
                    }
                    roots = Some(v);
                }
                args.push(ArgRule {
                    tool: glob(&a.tool)?,
                    path,
                    max: a.max,
                    min: a.min,
                    deny_patterns: a
                        .deny_patterns
                        .iter()
                        .map(regex)
                        .collect::<Result<_, _>>()?,
                    allow_patterns: a
                        .allow_patterns
                        .iter()
                        .map(regex)
                        .collect::<Result<_, _>>()?,
                    one_of: a
                        .one_of
                        .as_ref()
                        .map(|v| v.iter().map(toml_to_json).collect()),
                    email_domains: a.email_domains.as_ref().map(|v| lower(v)),
                    url_domains: a.url_domains.as_ref().map(|v| lower(v)),
                    path_roots: roots,
                });
            }
            let block_untrusted_arguments = match &s.untrusted_arguments {
                None => None,
                Some(v) if v.get_ref() == "warn" => Some(false),
                Some(v) if v.get_ref() == "block" => Some(true),
                Some(v) => {
                    return Err(err(
                        v.span(),
                        "untrusted_arguments must be \"warn\" or \"block\"".into(),
                    ));
                }
            };
            sections.push(Section {
                trusted_tools: globs(&s.trusted_tools)?,
                block_untrusted_arguments,
                agents: globs(&s.agents)?,
                deny_tools: globs(&s.deny_tools)?,
                allow_tools: s.allow_tools.as_deref().map(globs).transpose()?,
                require_approval: globs(&s.require_approval)?,
                loop_max_repeats,
                prompt_rules: s.prompt_rules,
                detectors: s.detectors,
                args,
            });
        }
        Ok(Policy { sections })
    }

    /// The policy in force for `agent_id`: every matching section merged in file order.
    pub fn for_agent(&self, agent_id: &str) -> AgentPolicy {
        let mut p = AgentPolicy::default();
        for s in &self.sections {
            if !s.agents.is_empty() && !s.agents.iter().any(|g| g.matches(agent_id)) {
                continue;
            }
            p.deny_tools.extend(s.deny_tools.iter().cloned());
            if let Some(allow) = &s.allow_tools {
                p.allow_tools
                    .get_or_insert_with(Vec::new)
                    .extend(allow.iter().cloned());
            }
            p.require_approval
                .extend(s.require_approval.iter().cloned());
            p.args.extend(s.args.iter().cloned());
            let d = &s.detectors;
            p.detectors.shell = d.shell.unwrap_or(p.detectors.shell);
            p.detectors.sql = d.sql.unwrap_or(p.detectors.sql);
            p.detectors.sensitive_paths = d.sensitive_paths.unwrap_or(p.detectors.sensitive_paths);
            p.detectors.secrets = d.secrets.unwrap_or(p.detectors.secrets);
            p.detectors.network = d.network.unwrap_or(p.detectors.network);
            p.loop_max_repeats = s.loop_max_repeats.unwrap_or(p.loop_max_repeats);
            p.prompt_rules = s.prompt_rules.unwrap_or(p.prompt_rules);
            p.trusted_tools.extend(s.trusted_tools.iter().cloned());
            p.block_untrusted_arguments = s
                .block_untrusted_arguments
                .unwrap_or(p.block_untrusted_arguments);
        }
        p
    }

    /// How many sections the file has.
    pub fn sections(&self) -> usize {
        self.sections.len()
    }
}

fn lower(v: &[String]) -> Vec<String> {
    v.iter()
        .map(|d| d.trim().trim_start_matches('.').to_ascii_lowercase())
        .collect()
}

fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_parses_and_turns_everything_on() {
        let p = Policy::parse(DEFAULT_POLICY).expect("default policy");
        let a = p.for_agent("any");
        assert_eq!(a.detectors, AgentPolicy::default().detectors);
        assert_eq!(a.loop_max_repeats, 5);
        assert!(a.prompt_rules);
    }

    #[test]
    fn sections_apply_to_matching_agents_and_merge_in_order() {
        let p = Policy::parse(
            r#"
[[section]]
deny_tools = ["delete_*"]
[section.detectors]
sql = false

[[section]]
agents = ["cs-*"]
allow_tools = ["get_*", "process_refund"]
loop_max_repeats = 3
[section.detectors]
sql = true

[[section.args]]
tool = "process_refund"
path = "amount"
max = 500
"#,
        )
        .expect("valid");
        let cs = p.for_agent("cs-agent-1");
        assert!(cs.detectors.sql);
        assert_eq!(cs.loop_max_repeats, 3);
        assert_eq!(cs.deny_tools.len(), 1);
        assert_eq!(cs.allow_tools.as_ref().map(Vec::len), Some(2));
        assert_eq!(cs.args.len(), 1);
        let other = p.for_agent("coder");
        assert!(!other.detectors.sql);
        assert!(other.allow_tools.is_none());
        assert!(other.args.is_empty());
    }

    #[test]
    fn errors_name_their_line() {
        let cases = [
            (
                "[[section]]\ndeny_tools = [\"a\"]\nbogus = 1\n",
                3,
                "unknown field",
            ),
            (
                "[[section]]\n\n[[section.args]]\ntool = \"t\"\npath = \"a\"\ndeny_patterns = [\"(\"]\n",
                6,
                "regular expression",
            ),
            ("[[section]]\nagents = [\"[\"]\n", 2, "glob"),
            ("[[section]]\nloop_max_repeats = 0\n", 2, "loop_max_repeats"),
            ("[[section]]\ndeny_tools = \"x\"\n", 2, "sequence"),
            ("[[section]\n", 1, ""),
            (
                "[[section]]\n[[section.args]]\ntool = \"t\"\npath = \"a..b\"\n",
                4,
                "path",
            ),
            (
                "[[section]]\n[[section.args]]\ntool = \"t\"\npath = \"p\"\npath_roots = [\"rel\"]\n",
                5,
                "absolute",
            ),
            (
                "[[section]]\n[[section.args]]\ntool = \"t\"\npath = \"amount\"\nmin = 10\nmax = 5\n",
                4,
                "min 10 is above max 5",
            ),
            (
                "[[section]]\n[[section.args]]\ntool = \"t\"\npath = \"amount\"\nmax = nan\n",
                4,
                "finite",
            ),
        ];
        for (text, line, word) in cases {
            let e = Policy::parse(text).expect_err(text);
            assert_eq!(e.line, Some(line), "{text:?}: {e}");
            assert!(e.message.contains(word), "{text:?}: {e}");
        }
    }
}
