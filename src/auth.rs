//! API keys, projects and permissions: who is calling and what they may do.
//!
//! A key is `rw_<type>_<48 hex digits>` (192 bits from the OS random source). Only its SHA-256
//! is stored; a request's key is hashed and looked up by that hash, so checking a key never
//! compares secrets byte by byte. A run belongs to the project of the key that registered it;
//! in open mode (no active key, loopback or `--allow-open`) every caller is in [`OPEN_PROJECT`].

use std::fmt;

use sha2::{Digest, Sha256};

/// The project of runs registered in open mode.
pub const OPEN_PROJECT: &str = "default";

/// What a key may do, and its default rate limits (those of the hosted API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// Every `/v1` route of its project; 60/minute, 1,000/hour.
    Development,
    /// Every `/v1` route of its project; 600/minute, 10,000/hour.
    Production,
    /// Only `POST /v1/event` and `POST /v1/check`; limits as production.
    Restricted,
    /// Every `/v1` route, reads across projects; unlimited.
    Admin,
}

impl KeyType {
    /// All types.
    pub const ALL: [KeyType; 4] = [
        KeyType::Development,
        KeyType::Production,
        KeyType::Restricted,
        KeyType::Admin,
    ];

    /// The stored and CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Development => "development",
            KeyType::Production => "production",
            KeyType::Restricted => "restricted",
            KeyType::Admin => "admin",
        }
    }

    /// Parses a stored or CLI name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether keys of this type have rate limits at all (and so may override them with
    /// `--rpm`/`--rph`): every type but admin.
    pub fn may_be_limited(self) -> bool {
        self != KeyType::Admin
    }

    /// The key prefix that shows the type at a glance.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyType::Development => "rw_dev_",
            KeyType::Production => "rw_prod_",
            KeyType::Restricted => "rw_rst_",
            KeyType::Admin => "rw_adm_",
        }
    }

    /// Default limits: (per minute, per hour); `None` is unlimited.
    pub fn default_limits(self) -> Limits {
        match self {
            KeyType::Development => Limits::new(Some(60), Some(1_000)),
            KeyType::Production | KeyType::Restricted => Limits::new(Some(600), Some(10_000)),
            KeyType::Admin => Limits::new(None, None),
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Requests allowed per minute and per hour (`None`: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute.
    pub per_minute: Option<u32>,
    /// Requests per hour.
    pub per_hour: Option<u32>,
}

impl Limits {
    /// Limits from their parts.
    pub fn new(per_minute: Option<u32>, per_hour: Option<u32>) -> Self {
        Limits {
            per_minute,
            per_hour,
        }
    }
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The public id (`key_…`), used by `keys revoke`.
    pub id: String,
    /// The project whose runs it reaches.
    pub project: String,
    /// What it may do.
    pub key_type: KeyType,
    /// An optional label.
    pub name: Option<String>,
    /// Per-key overrides of the type's limits.
    pub rpm: Option<u32>,
    /// Per-key override of the hourly limit.
    pub rph: Option<u32>,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it was last used, up to a minute behind (RFC 3339, UTC).
    pub last_used_at: Option<String>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
}

impl ApiKey {
    /// The limits in force: the key's overrides, else its type's defaults. Admin keys have
    /// none whatever their row says: `keys create` refuses `--rpm`/`--rph` for them, and a row
    /// written otherwise (by hand, or by a runwarden that allowed it) must not limit them.
    pub fn limits(&self) -> Limits {
        if !self.key_type.may_be_limited() {
            return Limits::new(None, None);
        }
        let d = self.key_type.default_limits();
        Limits::new(self.rpm.or(d.per_minute), self.rph.or(d.per_hour))
    }
}

/// A new key: its public id and its secret (shown once, never stored).
pub struct NewKey {
    /// The public id.
    pub id: String,
    /// The secret, e.g. `rw_dev_…`.
    pub secret: String,
    /// SHA-256 of the secret: what is stored.
    pub hash: [u8; 32],
}

/// Makes a new key of `key_type` from the OS random source.
pub fn generate_key(key_type: KeyType) -> Result<NewKey, String> {
    let mut secret_bytes = [0u8; 24];
    let mut id_bytes = [0u8; 6];
    getrandom::fill(&mut secret_bytes)
        .and_then(|()| getrandom::fill(&mut id_bytes))
        .map_err(|e| format!("the OS random source failed: {e}"))?;
    let secret = format!("{}{}", key_type.prefix(), hex(&secret_bytes));
    Ok(NewKey {
        id: format!("key_{}", hex(&id_bytes)),
        hash: hash_key(&secret),
        secret,
    })
}

/// SHA-256 of a presented key.
pub fn hash_key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's id; `None` in open mode.
    pub key_id: Option<String>,
    /// The caller's project.
    pub project: String,
    /// The key's type; `None` in open mode (which may do what a development key may,
    /// without limits).
    pub key_type: Option<KeyType>,
    /// The limits in force (none in open mode).
    pub limits: Limits,
}

impl Principal {
    /// The caller in open mode.
    pub fn open() -> Self {
        Principal {
            key_id: None,
            project: OPEN_PROJECT.to_string(),
            key_type: None,
            limits: Limits::new(None, None),
        }
    }

    /// The caller holding `key`.
    pub fn from_key(key: &ApiKey) -> Self {
        Principal {
            key_id: Some(key.id.clone()),
            project: key.project.clone(),
            key_type: Some(key.key_type),
            limits: key.limits(),
        }
    }

    /// Whether it may register runs and read (everything but event and check).
    pub fn may_use_every_route(&self) -> bool {
        self.key_type != Some(KeyType::Restricted)
    }
}

/// Checks a project name: 1 to 64 characters of `A-Z a-z 0-9 - _ .`.
pub fn parse_project(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "project {s:?} must be 1 to 64 characters of letters, digits, '-', '_' and '.'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_has_its_type_prefix_192_random_bits_and_its_hash() {
        let k = generate_key(KeyType::Development).expect("random");
        assert!(k.secret.starts_with("rw_dev_"), "{}", k.secret);
        assert_eq!(k.secret.len(), "rw_dev_".len() + 48);
        assert_eq!(k.hash, hash_key(&k.secret));
        let other = generate_key(KeyType::Development).expect("random");
        assert_ne!(k.secret, other.secret);
        assert_ne!(k.id, other.id);
    }

    #[test]
    fn default_limits_follow_the_hosted_api() {
        assert_eq!(
            KeyType::Development.default_limits(),
            Limits::new(Some(60), Some(1000))
        );
        assert_eq!(
            KeyType::Production.default_limits(),
            Limits::new(Some(600), Some(10_000))
        );
        assert_eq!(
            KeyType::Restricted.default_limits(),
            KeyType::Production.default_limits()
        );
        assert_eq!(KeyType::Admin.default_limits(), Limits::new(None, None));
    }

    #[test]
    fn key_overrides_replace_the_defaults_one_by_one() {
        let key = ApiKey {
            id: "key_1".into(),
            project: "p".into(),
            key_type: KeyType::Development,
            name: None,
            rpm: Some(5),
            rph: None,
            created_at: String::new(),
            last_used_at: None,
            revoked_at: None,
        };
        assert_eq!(key.limits(), Limits::new(Some(5), Some(1000)));
    }

    #[test]
    fn an_admin_key_is_unlimited_even_with_limits_in_its_row() {
        let key = ApiKey {
            id: "key_1".into(),
            project: "p".into(),
            key_type: KeyType::Admin,
            name: None,
            rpm: Some(1),
            rph: Some(2),
            created_at: String::new(),
            last_used_at: None,
            revoked_at: None,
        };
        assert_eq!(key.limits(), Limits::new(None, None));
        assert_eq!(Principal::from_key(&key).limits, Limits::new(None, None));
    }

    #[test]
    fn key_types_round_trip_through_their_names() {
        for t in KeyType::ALL {
            assert_eq!(KeyType::parse(t.as_str()), Some(t));
        }
        assert_eq!(KeyType::parse("dev"), None);
    }

    #[test]
    fn project_names_are_short_and_plain() {
        assert!(parse_project("team-a_1.prod").is_ok());
        for bad in ["", "a b", "a/b", &"x".repeat(65), "é"] {
            assert!(parse_project(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_restricted_keys_are_limited_to_event_and_check() {
        let mut p = Principal::open();
        assert!(p.may_use_every_route());
        p.key_type = Some(KeyType::Restricted);
        assert!(!p.may_use_every_route());
        p.key_type = Some(KeyType::Admin);
        assert!(p.may_use_every_route());
    }
}
