//! SHA-256 of files and folders, as recorded in the audit log and the reports.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn file_sha256(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Some(format!("{:x}", hasher.finalize()))
}

/// Every regular file under `dir`, recursively, sorted by path (empty when `dir`
/// is not a readable folder).
pub fn folder_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) if m.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// SHA-256 (hex) of a file; of a folder, the SHA-256 of its manifest (one
/// `<sha256>  <relative path>` line per file, sorted, as `sha256sum` prints them),
/// so the same tree hashes the same wherever it lies. `None` when unreadable.
pub fn path_sha256(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return file_sha256(path);
    }
    if !meta.is_dir() {
        return None;
    }
    let mut manifest = String::new();
    for f in folder_files(path) {
        let rel = f.strip_prefix(path).unwrap_or(&f);
        manifest.push_str(&format!("{}  {}\n", file_sha256(&f)?, rel.display()));
    }
    Some(format!("{:x}", Sha256::digest(manifest.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_hash_like_sha256sum_and_folders_by_their_manifest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"abc").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.txt"), b"").unwrap();
        let a = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(path_sha256(&dir.path().join("a.txt")).unwrap(), a);
        let manifest = format!("{a}  a.txt\n{empty}  sub/b.txt\n");
        assert_eq!(
            path_sha256(dir.path()).unwrap(),
            format!("{:x}", Sha256::digest(manifest.as_bytes()))
        );
        assert!(path_sha256(&dir.path().join("missing")).is_none());
    }
}
