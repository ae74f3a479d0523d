//! The optional allow-list of plugin libraries, by SHA-256.
//!
//! Plugins are native code that runs with the user's rights, like a CLAP host's
//! plugins: Lethe contains their crashes (workers) but not their intent. A site
//! that wants only vetted builds lists their hashes in an allow-list file; every
//! load (scan or job) then checks the library's hash first and refuses any other
//! file, naming it, its hash and the list. Without a list, every library in the
//! plugin folders is loaded.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Environment variable naming the allow-list file (overrides the default
/// `$XDG_CONFIG_HOME/lethe/plugin-allowlist.txt`, or `~/.config/...`).
pub const ALLOWLIST_ENV: &str = "LETHE_PLUGIN_ALLOWLIST";

/// The allow-list in force: the file named by [`ALLOWLIST_ENV`] (set and
/// non-empty: in force even if it cannot be read, so a typo refuses everything
/// rather than allowing everything), else the default file when it exists.
pub fn allowlist_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(ALLOWLIST_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let default = config.join("lethe").join("plugin-allowlist.txt");
    default.is_file().then_some(default)
}

/// The hashes an allow-list file lists: one lowercase hex SHA-256 per line,
/// optionally followed by a name; blank lines and `#` comments are ignored.
pub fn parse_allowlist(text: &str) -> Result<Vec<String>, String> {
    let mut hashes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(hash) = line.split_whitespace().next() else {
            continue;
        };
        if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "line {}: {hash:?} is not a SHA-256 in hex (64 characters)",
                n + 1
            ));
        }
        hashes.push(hash.to_ascii_lowercase());
    }
    Ok(hashes)
}

/// SHA-256 of a file, in lowercase hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Why a library may not be loaded under the allow-list in force, if it may not.
pub fn refusal(path: &Path) -> Option<String> {
    let list = allowlist_path()?;
    let hashes = match std::fs::read_to_string(&list) {
        Ok(text) => match parse_allowlist(&text) {
            Ok(h) => h,
            Err(e) => {
                return Some(format!(
                    "the plugin allow-list {} is malformed ({e}); no plugin is loaded until it is fixed",
                    list.display()
                ));
            }
        },
        Err(e) => {
            return Some(format!(
                "the plugin allow-list {} cannot be read ({e}); no plugin is loaded until it can",
                list.display()
            ));
        }
    };
    match file_sha256(path) {
        Ok(h) if hashes.contains(&h) => None,
        Ok(h) => Some(format!(
            "not on the plugin allow-list {} (its SHA-256 is {h}; add that line to allow it)",
            list.display()
        )),
        Err(e) => Some(format!("cannot hash it for the allow-list: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlists_take_hashes_with_names_and_comments() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let text = format!("# vetted builds\n{a} libfoo.so\n\n{b}  # the other one\n");
        assert_eq!(parse_allowlist(&text).unwrap(), [a, "b".repeat(64)]);
        let err = parse_allowlist("deadbeef libfoo.so\n").unwrap_err();
        assert!(err.contains("line 1") && err.contains("deadbeef"), "{err}");
    }

    #[test]
    fn file_hashes_match_sha256sum() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"abc").unwrap();
        // The FIPS 180-2 test vector for "abc".
        assert_eq!(
            file_sha256(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
