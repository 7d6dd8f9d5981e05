//! The workspace's declared minimum Rust version is one value, inherited by every crate, and the
//! one README.md tells users to install. (Whether the code really builds with it is clippy's
//! `incompatible_msrv`, denied in the workspace lints: it flags std APIs newer than the value.)

use modelpack_testkit::root;

/// The value of `key = "..."` on its own line in a manifest's text (no TOML parser needed for
/// the two lines read here).
fn string_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(key)?.trim_start().strip_prefix('=')?;
        Some(rest.trim().trim_matches('"').to_owned())
    })
}

#[test]
fn one_rust_version_inherited_and_documented() {
    let ws = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let version = string_value(&ws, "rust-version").expect("workspace.package rust-version");
    assert!(version.split('.').all(|p| p.parse::<u32>().is_ok()), "{version}");

    let members: Vec<String> = ws
        .split("members = [")
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap()
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    assert!(members.len() >= 6, "{members:?}");
    for m in &members {
        let text = std::fs::read_to_string(root().join(m).join("Cargo.toml")).unwrap();
        assert!(
            text.lines().any(|l| l.trim() == "rust-version.workspace = true"),
            "{m}/Cargo.toml must inherit the workspace rust-version"
        );
    }

    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains(&format!("Rust {version} or newer")), "README.md must say `Rust {version} or newer`");
}
