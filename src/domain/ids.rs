//! Identifiers: [`TraceId`] (a UUID in canonical hyphenated form) and [`AgentId`] (an opaque
//! string of 1 to 256 characters without control characters).

use std::fmt;

use uuid::Uuid;

/// A run's id. Always displayed lowercase and hyphenated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(Uuid);

impl TraceId {
    /// A new random (v4) trace id.
    pub fn new_random() -> Self {
        TraceId(Uuid::new_v4())
    }

    /// Parses the canonical hyphenated form (`8-4-4-4-12` hex digits, any case). The braced,
    /// URN and unhyphenated forms that the `uuid` crate also accepts are rejected, so that a
    /// trace id has exactly one spelling on the wire.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bytes = s.as_bytes();
        let well_formed = bytes.len() == 36
            && bytes.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        if !well_formed {
            return Err(
                "trace_id must be a UUID in canonical form, e.g. f4f4f4f4-f4f4-f4f4-f4f4-f4f4f4f4f4f4"
                    .to_string(),
            );
        }
        Uuid::try_parse(s)
            .map(TraceId)
            .map_err(|e| format!("trace_id is not a valid UUID: {e}"))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Uuid`'s Display is lowercase and hyphenated.
        self.0.fmt(f)
    }
}

/// An agent's stable, opaque id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentId(String);

/// The longest accepted agent id, in characters.
pub const MAX_AGENT_ID_CHARS: usize = 256;

impl AgentId {
    /// Accepts 1 to 256 characters, none of them a control character.
    pub fn parse(s: String) -> Result<Self, String> {
        let chars = s.chars().count();
        if chars == 0 {
            return Err("agent_id must not be empty".to_string());
        }
        if chars > MAX_AGENT_ID_CHARS {
            return Err(format!(
                "agent_id must be at most {MAX_AGENT_ID_CHARS} characters (got {chars})"
            ));
        }
        if s.chars().any(char::is_control) {
            return Err("agent_id must not contain control characters".to_string());
        }
        Ok(AgentId(s))
    }
}

impl AsRef<str> for AgentId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canonical_uuid_in_any_case_is_a_trace_id_and_displays_lowercase() {
        let id = TraceId::parse("F4F4F4F4-F4F4-F4F4-F4F4-F4F4F4F4F4F4").expect("valid");
        assert_eq!(id.to_string(), "f4f4f4f4-f4f4-f4f4-f4f4-f4f4f4f4f4f4");
    }

    #[test]
    fn non_canonical_uuid_spellings_are_rejected() {
        for s in [
            "f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4",
            "{f4f4f4f4-f4f4-f4f4-f4f4-f4f4f4f4f4f4}",
            "urn:uuid:f4f4f4f4-f4f4-f4f4-f4f4-f4f4f4f4f4f4",
            "f4f4f4f4-f4f4-f4f4-f4f4-f4f4f4f4f4f",
            "g4f4f4f4-f4f4-f4f4-f4f4-f4f4f4f4f4f4",
            "f4f4f4f4-f4f4f-4f4-f4f4-f4f4f4f4f4f4",
            "",
            "not-a-uuid",
        ] {
            assert!(TraceId::parse(s).is_err(), "{s:?} should be rejected");
        }
    }

    #[test]
    fn random_trace_ids_are_v4_and_distinct() {
        let a = TraceId::new_random();
        let b = TraceId::new_random();
        assert_ne!(a, b);
        assert_eq!(a.to_string().as_bytes()[14], b'4');
    }

    #[test]
    fn an_agent_id_of_256_characters_is_accepted_and_257_rejected() {
        assert!(AgentId::parse("é".repeat(256)).is_ok());
        assert!(AgentId::parse("é".repeat(257)).is_err());
    }

    #[test]
    fn an_empty_agent_id_is_rejected() {
        assert!(AgentId::parse(String::new()).is_err());
    }

    #[test]
    fn an_agent_id_with_a_control_character_is_rejected() {
        for s in ["a\nb", "a\u{0}b", "tab\there", "del\u{7f}"] {
            assert!(AgentId::parse(s.to_string()).is_err(), "{s:?}");
        }
    }

    #[test]
    fn an_opaque_agent_id_is_accepted() {
        assert!(AgentId::parse("cs-agent-prod-v1".to_string()).is_ok());
    }
}
