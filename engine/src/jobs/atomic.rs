//! Outputs are written to a temporary file in the target folder, synced, then renamed,
//! so a crash or a full disk never leaves a half-written report or clobbers an original.

use std::io::Write;
use std::path::Path;

use super::JobError;

/// Writes `bytes` to `path` atomically; refuses to replace an existing file unless
/// `overwrite` is set.
pub fn write_atomic(path: &Path, bytes: &[u8], overwrite: bool) -> Result<(), JobError> {
    let err = |source| JobError::Write {
        path: path.to_path_buf(),
        source,
    };
    if !overwrite && path.exists() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the file exists and is never overwritten",
        )));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    // Unique per call, not only per process: two threads writing the same file
    // (the window works out the same attack metrics for two views) must not
    // share a temporary file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if overwrite {
            return std::fs::rename(&tmp, path);
        }
        // A hard link is made only where no file is: of two writers that both
        // passed the check above, exactly one wins and the other is told so.
        // A rename would let the second silently replace the first.
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => std::fs::remove_file(&tmp),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
            // A file system without hard links (FAT, some network mounts):
            // the check above is the best there is.
            Err(_) if !path.exists() => std::fs::rename(&tmp, path),
            Err(e) => Err(e),
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_refuses_to_clobber_and_leaves_no_temp_files() {
        let dir = std::env::temp_dir().join(format!("lethe-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let p = dir.join("report.json");
        write_atomic(&p, b"one", false).unwrap();
        let e = write_atomic(&p, b"two", false).unwrap_err();
        assert!(e.to_string().contains("report.json"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        write_atomic(&p, b"two", true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Writers racing on one new file: one wins whole, the others are refused,
    /// none replaces it and no temporary file is left.
    #[test]
    fn racing_writers_never_replace_each_other() {
        let dir = std::env::temp_dir().join(format!("lethe-atomic-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for round in 0..20 {
            let p = dir.join(format!("attack-{round}.json"));
            let results: Vec<(usize, bool)> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|w| {
                        let p = p.clone();
                        s.spawn(move || {
                            (w, write_atomic(&p, &[b'a' + w as u8; 4096], false).is_ok())
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let winners: Vec<usize> = results.iter().filter(|r| r.1).map(|r| r.0).collect();
            assert_eq!(winners.len(), 1, "round {round}: {results:?}");
            let bytes = std::fs::read(&p).unwrap();
            assert_eq!(bytes, vec![b'a' + winners[0] as u8; 4096], "round {round}");
        }
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 20, "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_parent_that_cannot_be_created_is_a_named_error() {
        let e = write_atomic(Path::new("/proc/no-such/x.json"), b"x", false).unwrap_err();
        assert!(e.to_string().contains("/proc/no-such/x.json"), "{e}");
    }
}
