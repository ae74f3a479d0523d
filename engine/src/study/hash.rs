//! Content hashes: of input files and folders (what a study ran on), of a
//! forget set (its indices, not its file's formatting), of a model's weights
//! (a saved checkpoint's bytes also hold the time it was written), and a
//! canonical JSON form for hashing settings.

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// SHA-256 (hex) of a file, or of a folder as the sorted `sha256sum`-style
/// manifest of every file below it.
pub fn path_sha256(path: &Path) -> std::io::Result<String> {
    if path.is_dir() {
        let mut files = Vec::new();
        list_files(path, path, &mut files)?;
        files.sort();
        let mut manifest = String::new();
        for rel in files {
            let digest = Sha256::digest(std::fs::read(path.join(&rel))?);
            manifest.push_str(&format!("{digest:x}  {rel}\n"));
        }
        Ok(format!("{:x}", Sha256::digest(manifest.as_bytes())))
    } else {
        Ok(format!("{:x}", Sha256::digest(std::fs::read(path)?)))
    }
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            list_files(root, &p, out)?;
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// SHA-256 of a forget set: its sorted stable indices, one per line.
pub fn forget_sha256(indices: &[i64]) -> String {
    let mut sorted = indices.to_vec();
    sorted.sort_unstable();
    let text: String = sorted.iter().map(|i| format!("{i}\n")).collect();
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// SHA-256 of a safetensors file's tensors (name, dtype, shape and bytes, by
/// name), ignoring its metadata: two saves of the same weights hash alike.
pub fn weights_sha256(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: not a safetensors file ({e:?})", path.display()))?;
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    let mut h = Sha256::new();
    for name in names {
        let t = st
            .tensor(&name)
            .map_err(|e| format!("{}: tensor {name}: {e:?}", path.display()))?;
        h.update(format!("{name}\0{:?}\0{:?}\0", t.dtype(), t.shape()).as_bytes());
        h.update(t.data());
    }
    Ok(format!("{:x}", h.finalize()))
}

/// `v` as JSON with every object's keys sorted, so equal settings hash alike
/// whatever order they were written in.
pub fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&m[k])))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical_json).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// SHA-256 (hex) of [`canonical_json`].
pub fn json_sha256(v: &Value) -> String {
    format!("{:x}", Sha256::digest(canonical_json(v).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_ignores_key_order() {
        let a = json!({"b": 1, "a": {"y": [1, 2.5], "x": "s"}});
        let b = json!({"a": {"x": "s", "y": [1, 2.5]}, "b": 1});
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"s","y":[1,2.5]},"b":1}"#);
        assert_ne!(json_sha256(&a), json_sha256(&json!({"b": 2})));
    }

    #[test]
    fn forget_hash_is_order_free_and_folders_hash_their_files() {
        assert_eq!(forget_sha256(&[3, 1, 2]), forget_sha256(&[1, 2, 3]));
        assert_ne!(forget_sha256(&[1, 2]), forget_sha256(&[1, 2, 3]));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), b"1").unwrap();
        let h1 = path_sha256(dir.path()).unwrap();
        std::fs::write(dir.path().join("sub/a"), b"2").unwrap();
        assert_ne!(h1, path_sha256(dir.path()).unwrap());
        assert_eq!(
            path_sha256(&dir.path().join("sub/a")).unwrap(),
            // sha256("2")
            "d4735e3a265e16eee03f59718b9b5d03019c07d8b6c51f90da3a666eec13ab35"
        );
    }
}
