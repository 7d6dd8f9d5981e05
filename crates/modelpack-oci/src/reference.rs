//! Transport references in skopeo's spelling: `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` and
//! `[docker://]HOST[:PORT]/REPO[:TAG|@sha256:HEX]`.

use crate::error::{OciError, Result};
use std::path::PathBuf;

/// Where an artifact is written to or read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An OCI image-layout directory.
    Layout {
        /// Directory.
        dir: PathBuf,
        /// `org.opencontainers.image.ref.name` in `index.json`.
        tag: Option<String>,
    },
    /// A tar file of an OCI image layout.
    Archive {
        /// Tar file.
        file: PathBuf,
        /// Tag inside the archive's `index.json`.
        tag: Option<String>,
    },
    /// A repository in a registry.
    Registry(RegistryRef),
}

/// `HOST[:PORT]/REPO` plus a tag or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// `host[:port]`.
    pub host: String,
    /// Repository path (`team/model`).
    pub repo: String,
    /// Tag or digest.
    pub reference: TagOrDigest,
}

/// What a registry reference points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagOrDigest {
    /// A tag (`latest` when none was given).
    Tag(String),
    /// `sha256:<64 hex>`.
    Digest(String),
}

impl TagOrDigest {
    /// The string used in `/manifests/<ref>` URLs.
    pub fn as_str(&self) -> &str {
        match self {
            TagOrDigest::Tag(t) | TagOrDigest::Digest(t) => t,
        }
    }
}

fn bad(reference: &str, reason: impl Into<String>) -> OciError {
    OciError::Reference { reference: reference.to_string(), reason: reason.into() }
}

/// A tag as the distribution spec allows: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
}

fn valid_repo(r: &str) -> bool {
    !r.is_empty()
        && r.split('/').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
                && c.as_bytes()[0].is_ascii_alphanumeric()
                && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
        })
}

fn split_path_tag(reference: &str, rest: &str) -> Result<(PathBuf, Option<String>)> {
    // The tag is after the last ':' when that text is a valid tag and contains no '/'.
    let (path, tag) = match rest.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => {
            if !valid_tag(t) {
                return Err(bad(reference, format!("{t:?} is not a valid tag")));
            }
            (p, Some(t.to_string()))
        }
        _ => (rest, None),
    };
    if path.is_empty() {
        return Err(bad(reference, "no path"));
    }
    Ok((PathBuf::from(path), tag))
}

impl Location {
    /// Parse a transport reference. A bare `HOST/REPO` needs a host part with a `.`, a `:` or
    /// `localhost`, as Docker decides, so a relative directory is never taken for a registry.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = split_path_tag(s, rest)?;
            return Ok(Location::Layout { dir, tag });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (file, tag) = split_path_tag(s, rest)?;
            return Ok(Location::Archive { file, tag });
        }
        let explicit = s.starts_with("docker://");
        let rest = s.strip_prefix("docker://").unwrap_or(s);
        let Some((host, path)) = rest.split_once('/') else {
            return Err(bad(s, "expected oci:DIR[:TAG], oci-archive:FILE[:TAG] or HOST[:PORT]/REPO[:TAG|@DIGEST]"));
        };
        if !(explicit || host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(bad(s, "not a registry host (use docker://HOST/REPO, or oci:DIR for a directory)"));
        }
        if host.is_empty() || host.bytes().any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))) {
            return Err(bad(s, "bad registry host"));
        }
        let (repo, reference) = if let Some((r, d)) = path.split_once('@') {
            if !valid_digest(d) {
                return Err(bad(s, "digest must be sha256:<64 lowercase hex>"));
            }
            (r, TagOrDigest::Digest(d.to_string()))
        } else {
            match path.rsplit_once(':') {
                Some((r, t)) => {
                    if !valid_tag(t) {
                        return Err(bad(s, format!("{t:?} is not a valid tag")));
                    }
                    (r, TagOrDigest::Tag(t.to_string()))
                }
                None => (path, TagOrDigest::Tag("latest".into())),
            }
        };
        if !valid_repo(repo) {
            return Err(bad(s, "repository must be lowercase [a-z0-9._-] components separated by '/'"));
        }
        Ok(Location::Registry(RegistryRef { host: host.to_string(), repo: repo.to_string(), reference }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_transports() {
        assert_eq!(
            Location::parse("oci:/tmp/x:v1").unwrap(),
            Location::Layout { dir: "/tmp/x".into(), tag: Some("v1".into()) }
        );
        assert_eq!(Location::parse("oci:out").unwrap(), Location::Layout { dir: "out".into(), tag: None });
        assert_eq!(
            Location::parse("oci-archive:a.tar").unwrap(),
            Location::Archive { file: "a.tar".into(), tag: None }
        );
        let Location::Registry(r) = Location::parse("127.0.0.1:5000/team/m:q4").unwrap() else { panic!() };
        assert_eq!((r.host.as_str(), r.repo.as_str()), ("127.0.0.1:5000", "team/m"));
        assert_eq!(r.reference, TagOrDigest::Tag("q4".into()));
        let d = format!("docker://reg/m@sha256:{}", "a".repeat(64));
        let Location::Registry(r) = Location::parse(&d).unwrap() else { panic!() };
        assert!(matches!(r.reference, TagOrDigest::Digest(_)));
        let Location::Registry(r) = Location::parse("localhost/m").unwrap() else { panic!() };
        assert_eq!(r.reference, TagOrDigest::Tag("latest".into()));
    }

    #[test]
    fn refuses_bad_references() {
        for s in ["out/dir", "reg.io/UPPER:x", "reg.io/m:bad tag", "reg.io/m@sha256:12", "oci::x", "reg.io/"] {
            assert!(Location::parse(s).is_err(), "{s}");
        }
    }
}
