//! The deployment recipe in `fixtures/deploy/`: the systemd unit parses as a unit file with the
//! settings the README promises, every `serve` flag it uses exists, and nginx's upstream is the
//! address the unit serves on. `.ci/tls-proxy` runs the nginx recipe itself over TLS (it needs
//! nginx and root, so it is not part of `cargo test`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::helpers::run_to_exit;

/// A file of `fixtures/deploy/`.
fn deploy_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A unit file as (section, [(key, value)]) in file order; panics on a line that is neither a
/// comment, a section header nor `Key=value` (systemd's syntax, without line continuations).
fn parse_unit(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(!line.ends_with('\\'), "line {}: no continuations", n + 1);
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.to_string(), Vec::new()));
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not Key=value: {raw:?}", n + 1));
        let key = key.trim();
        assert!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()),
            "line {}: bad key {key:?}",
            n + 1
        );
        let (_, entries) = sections
            .last_mut()
            .unwrap_or_else(|| panic!("line {}: a setting before any section", n + 1));
        entries.push((key.to_string(), value.trim().to_string()));
    }
    sections
}

/// The unit's sections, each as key -> values (a key may repeat, e.g. `Environment`).
fn unit() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let sections = parse_unit(&deploy_file("runwarden.service"));
    let names: Vec<&str> = sections.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["Unit", "Service", "Install"], "the unit's sections");
    sections
        .into_iter()
        .map(|(name, entries)| {
            let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (key, value) in entries {
                map.entry(key).or_default().push(value);
            }
            (name, map)
        })
        .collect()
}

/// The single value of `key` in `section`.
fn one<'u>(
    unit: &'u BTreeMap<String, BTreeMap<String, Vec<String>>>,
    section: &str,
    key: &str,
) -> &'u str {
    match unit[section].get(key).map(Vec::as_slice) {
        Some([value]) => value,
        other => panic!("[{section}] {key}: expected one value, got {other:?}"),
    }
}

/// The arguments of `ExecStart` after `/usr/local/bin/runwarden serve`, as flag -> value.
fn serve_flags(unit: &BTreeMap<String, BTreeMap<String, Vec<String>>>) -> BTreeMap<String, String> {
    let exec = one(unit, "Service", "ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(
        words.get(..2),
        Some(&["/usr/local/bin/runwarden", "serve"][..]),
        "ExecStart runs `runwarden serve`: {exec}"
    );
    let rest = &words[2..];
    assert!(
        rest.len().is_multiple_of(2),
        "ExecStart: flags with values: {exec}"
    );
    rest.chunks(2)
        .map(|pair| {
            assert!(
                pair[0].starts_with("--"),
                "ExecStart: {:?} is no flag",
                pair[0]
            );
            (pair[0].to_string(), pair[1].to_string())
        })
        .collect()
}

/// `runwarden serve --help`.
fn serve_help() -> String {
    let out = run_to_exit(&["serve", "--help"]);
    assert!(out.status.success(), "serve --help: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of nginx directive `name` (first occurrence, without the `;`).
fn nginx_directive<'c>(conf: &'c str, name: &str) -> &'c str {
    conf.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).filter(|rest| rest.starts_with(' ')))
        .and_then(|rest| rest.trim().strip_suffix(';'))
        .unwrap_or_else(|| panic!("nginx.conf has no `{name} …;`"))
}

#[test]
fn the_systemd_unit_parses_and_has_the_promised_settings() {
    // Arrange, Act
    let unit = unit();

    // Assert
    for (key, value) in [
        ("User", "runwarden"),
        ("StateDirectory", "runwarden"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
    ] {
        assert_eq!(one(&unit, "Service", key), value, "[Service] {key}");
    }
    assert!(
        unit["Service"]["Environment"].contains(&"RUST_LOG=info".to_string()),
        "Environment=RUST_LOG=info"
    );
    for key in ["TimeoutStopSec", "LimitNOFILE"] {
        let value = one(&unit, "Service", key);
        assert!(
            value.parse::<u64>().is_ok_and(|n| n > 0),
            "[Service] {key}={value}"
        );
    }
    assert_eq!(one(&unit, "Install", "WantedBy"), "multi-user.target");
    // The database lives in the state directory, the one path ProtectSystem=strict leaves
    // writable. It is named by RUNWARDEN_DB, not --db, so that RUNWARDEN_DATABASE_URL in the
    // env file can replace it (a --db typed in ExecStart would conflict with the URL).
    let flags = serve_flags(&unit);
    assert_eq!(flags.get("--db"), None, "ExecStart passes no --db");
    assert!(
        unit["Service"]["Environment"]
            .contains(&"RUNWARDEN_DB=/var/lib/runwarden/runwarden.db".to_string()),
        "Environment=RUNWARDEN_DB=/var/lib/runwarden/runwarden.db"
    );
}

#[test]
fn every_flag_the_unit_passes_to_serve_exists() {
    // Arrange
    let flags = serve_flags(&unit());

    // Act
    let help = serve_help();

    // Assert
    assert!(flags.contains_key("--addr"), "{flags:?}");
    for flag in flags.keys() {
        assert!(
            help.contains(&format!("{flag} ")),
            "`serve --help` lists {flag}:\n{help}"
        );
    }
    let addr: SocketAddr = flags["--addr"].parse().expect("--addr is IP:PORT");
    assert!(
        addr.ip().is_loopback(),
        "runwarden listens on loopback only, behind the proxy: {addr}"
    );
    // RUNWARDEN_DB, which names the database, is a variable `serve` reads.
    assert!(help.contains("RUNWARDEN_DB"), "{help}");
}

#[test]
fn nginx_proxies_to_the_units_address_and_lets_runwarden_answer_413() {
    // Arrange
    let conf = deploy_file("nginx.conf");
    let unit_addr = serve_flags(&unit())["--addr"].clone();
    let help = serve_help();

    // Act
    let upstream = nginx_directive(&conf, "server");
    let max_body = nginx_directive(&conf, "client_max_body_size");

    // Assert
    assert_eq!(
        upstream, unit_addr,
        "nginx's upstream is where the unit serves"
    );
    assert_eq!(
        nginx_directive(&conf, "proxy_pass"),
        "http://runwarden",
        "proxy_pass names the upstream block"
    );
    assert_eq!(nginx_directive(&conf, "ssl_protocols"), "TLSv1.2 TLSv1.3");
    // runwarden's default body limit, from its own help text.
    let default_limit: u64 = help
        .lines()
        .find(|l| l.trim_start().starts_with("--max-body-bytes"))
        .and_then(|l| l.split("[default: ").nth(1))
        .and_then(|d| d.split(']').next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no --max-body-bytes default in\n{help}"));
    let nginx_limit: u64 = max_body
        .strip_suffix('k')
        .and_then(|k| k.parse::<u64>().ok())
        .map(|k| k * 1024)
        .unwrap_or_else(|| panic!("client_max_body_size in k: {max_body}"));
    assert!(
        nginx_limit > default_limit && nginx_limit <= default_limit * 5 / 4,
        "nginx's limit ({nginx_limit}) is a little above runwarden's ({default_limit}), so that \
         runwarden answers 413 with its own envelope"
    );
}
