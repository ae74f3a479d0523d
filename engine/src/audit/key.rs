//! The workspace's signing key: an Ed25519 key pair that signs the deletion
//! certificates of the reports made in the workspace (`lethe report`).
//!
//! The key is made on first use from the operating system's random source and
//! kept beside the audit log:
//!
//! * `<workspace>/lethe-signing-key.pem`: the private key, PKCS#8 PEM (RFC 8410,
//!   as `openssl genpkey -algorithm ed25519` writes it), mode 0600, written to a
//!   temporary file and linked into place, so it is whole or absent and an
//!   existing key is never replaced (two processes making it at once agree on
//!   the first one). A key file others may read is refused, as ssh refuses one.
//! * `<workspace>/lethe-signing-key.pub.pem`: the public key, SubjectPublicKeyInfo
//!   PEM, for tools such as `openssl pkeyutl -verify`.
//!
//! A key is named by its fingerprint: the SHA-256 (hex) of the 32 raw bytes of
//! its public key.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The private key's file name inside a workspace.
pub const KEY_FILE: &str = "lethe-signing-key.pem";
/// The public key's file name inside a workspace.
pub const PUBLIC_KEY_FILE: &str = "lethe-signing-key.pub.pem";

/// DER of a PKCS#8 v1 `PrivateKeyInfo` for Ed25519 (OID 1.3.101.112) up to the
/// 32-byte seed (RFC 8410 section 7).
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER of a `SubjectPublicKeyInfo` for Ed25519 up to the 32-byte key.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The key file is missing, unreadable, malformed or too open.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct KeyError {
    /// The key file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

fn key_error(path: &Path, message: impl Into<String>) -> KeyError {
    KeyError {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// An Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The raw bytes as 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        hex(&self.to_bytes())
    }

    /// SHA-256 (hex) of the raw bytes.
    pub fn fingerprint(&self) -> String {
        format!("{:x}", Sha256::digest(self.to_bytes()))
    }

    /// A key from its 64 hex digits; `None` when they are no valid key.
    pub fn from_hex(text: &str) -> Option<PublicKey> {
        let bytes: [u8; 32] = unhex(text)?.try_into().ok()?;
        VerifyingKey::from_bytes(&bytes).ok().map(PublicKey)
    }

    /// Whether `signature` (64 bytes) is this key's Ed25519 signature of
    /// `message` (RFC 8032, with the strict checks that refuse malleable
    /// signatures and weak keys).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = Signature::from_bytes(signature);
        self.0.verify_strict(message, &sig).is_ok()
    }

    /// SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.to_bytes());
        pem("PUBLIC KEY", &der)
    }
}

/// A workspace's key pair.
pub struct WorkspaceKey {
    signing: SigningKey,
    path: PathBuf,
    created: bool,
}

impl std::fmt::Debug for WorkspaceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("WorkspaceKey")
            .field("path", &self.path)
            .field("public", &self.public().hex())
            .field("created", &self.created)
            .finish()
    }
}

impl WorkspaceKey {
    /// The key pair of a 32-byte seed (RFC 8032's private key).
    pub fn from_seed(seed: &[u8; 32], path: &Path) -> WorkspaceKey {
        WorkspaceKey {
            signing: SigningKey::from_bytes(seed),
            path: path.to_path_buf(),
            created: false,
        }
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    /// The Ed25519 signature (RFC 8032; deterministic) of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The private key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this call made the key (it did not exist before).
    pub fn created(&self) -> bool {
        self.created
    }
}

/// The private key file of a workspace.
pub fn key_path(workspace: &Path) -> PathBuf {
    workspace.join(KEY_FILE)
}

/// The public key file of a workspace.
pub fn public_key_path(workspace: &Path) -> PathBuf {
    workspace.join(PUBLIC_KEY_FILE)
}

/// The workspace's key, made now when it has none.
pub fn load_or_create(workspace: &Path) -> Result<WorkspaceKey, KeyError> {
    let path = key_path(workspace);
    if let Some(key) = load(workspace)? {
        return Ok(key);
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| key_error(&path, format!("no random bytes for a new key: {e}")))?;
    let mut der = PKCS8_PREFIX.to_vec();
    der.extend_from_slice(&seed);
    let text = pem("PRIVATE KEY", &der);
    let key = WorkspaceKey::from_seed(&seed, &path);
    seed.fill(0);
    der.fill(0);
    match create_private(&path, text.as_bytes()) {
        Ok(()) => {}
        // Another process made it first: use that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return load(workspace)?
                .ok_or_else(|| key_error(&path, "the key file vanished while it was read"));
        }
        Err(e) => return Err(key_error(&path, format!("cannot write the new key: {e}"))),
    }
    // The public half, for other tools; a stale one is replaced by the truth.
    let pub_path = public_key_path(workspace);
    let public = key.public().to_pem();
    if std::fs::read_to_string(&pub_path).ok().as_deref() != Some(public.as_str()) {
        crate::jobs::atomic::write_atomic(&pub_path, public.as_bytes(), true)
            .map_err(|e| key_error(&pub_path, e.to_string()))?;
    }
    Ok(WorkspaceKey {
        created: true,
        ..key
    })
}

/// The workspace's key, `None` when it has none (never makes one).
pub fn load(workspace: &Path) -> Result<Option<WorkspaceKey>, KeyError> {
    let path = key_path(workspace);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(key_error(&path, e.to_string())),
    };
    if !meta.is_file() {
        return Err(key_error(
            &path,
            "is not a regular file (a link or a folder is not taken as the signing key)",
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(key_error(
            &path,
            format!(
                "the private key may be read by others (mode {mode:04o}); it is not used until \
                 it is private: chmod 600 {}",
                path.display()
            ),
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| key_error(&path, e.to_string()))?;
    let der = unpem("PRIVATE KEY", &text)
        .ok_or_else(|| key_error(&path, "not a PEM private key (-----BEGIN PRIVATE KEY-----)"))?;
    let seed: [u8; 32] = der
        .strip_prefix(&PKCS8_PREFIX[..])
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| key_error(&path, "not an Ed25519 PKCS#8 key (RFC 8410)"))?;
    Ok(Some(WorkspaceKey::from_seed(&seed, &path)))
}

/// The workspace's public key: from its private key, else from its public key
/// file (a workspace whose private key this user may not read); `None` when it
/// has neither.
pub fn public_key(workspace: &Path) -> Result<Option<PublicKey>, KeyError> {
    match load(workspace) {
        Ok(Some(k)) => return Ok(Some(k.public())),
        Ok(None) => {}
        Err(e) if !public_key_path(workspace).is_file() => return Err(e),
        Err(_) => {}
    }
    let path = public_key_path(workspace);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let der = unpem("PUBLIC KEY", &text)
        .ok_or_else(|| key_error(&path, "not a PEM public key (-----BEGIN PUBLIC KEY-----)"))?;
    der.strip_prefix(&SPKI_PREFIX[..])
        .and_then(|raw| VerifyingKey::from_bytes(raw.try_into().ok()?).ok())
        .map(|k| Some(PublicKey(k)))
        .ok_or_else(|| key_error(&path, "not an Ed25519 public key (RFC 8410)"))
}

/// Creates `path` holding `bytes` with mode 0600, whole or not at all, never over
/// an existing file (`AlreadyExists` then).
fn create_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".into());
    // Unique per call: two threads of one process may make the key at once.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The umask can only take permissions away; make sure of 0600 anyway.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        // A hard link is made only where no file is: the first key wins.
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
            // No hard links here (FAT, some network mounts): rename, after a
            // last look.
            Err(_) if !path.exists() => std::fs::rename(&tmp, path),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    if result.is_ok()
        && let Ok(d) = std::fs::File::open(dir)
    {
        // The new name survives a crash.
        let _ = d.sync_all();
    }
    result
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of an even-length hex string (either case); `None` otherwise.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let t = text.as_bytes();
    if !t.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    t.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn unpem(label: &str, text: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text.split_once(&begin)?.1.split_once(&end)?.0;
    unbase64(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 section 7.1, TEST 1 (empty message), TEST 2 (one byte) and
    /// TEST 3 (two bytes).
    const RFC8032: [(&str, &str, &str, &str); 3] = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ];

    #[test]
    fn signatures_match_rfc_8032_test_vectors() {
        for (secret, public, message, signature) in RFC8032 {
            let seed: [u8; 32] = unhex(secret).unwrap().try_into().unwrap();
            let key = WorkspaceKey::from_seed(&seed, Path::new("k"));
            assert_eq!(key.public().hex(), public);
            let msg = unhex(message).unwrap();
            let sig = key.sign(&msg);
            assert_eq!(hex(&sig), signature);
            let pk = PublicKey::from_hex(public).unwrap();
            assert!(pk.verify(&msg, &sig));
            let mut bad = sig;
            bad[10] ^= 1;
            assert!(!pk.verify(&msg, &bad));
            assert!(!pk.verify(b"another message", &sig));
        }
    }

    #[test]
    fn a_key_is_made_once_private_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        assert!(load(&ws).unwrap().is_none());
        assert!(public_key(&ws).unwrap().is_none());
        let k = load_or_create(&ws).unwrap();
        assert!(k.created());
        let path = key_path(&ws);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
        // No temporary file is left beside it.
        let names: Vec<String> = std::fs::read_dir(&ws)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, [KEY_FILE, PUBLIC_KEY_FILE], "{names:?}");
        // Used again, not made again: the same key, the file untouched.
        let again = load_or_create(&ws).unwrap();
        assert!(!again.created());
        assert_eq!(again.public(), k.public());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        assert_eq!(public_key(&ws).unwrap(), Some(k.public()));
        let pub_pem = std::fs::read_to_string(public_key_path(&ws)).unwrap();
        assert_eq!(pub_pem, k.public().to_pem());
        // Signatures verify with the public key alone.
        let sig = k.sign(b"certificate");
        assert!(k.public().verify(b"certificate", &sig));
        assert_eq!(k.public().fingerprint().len(), 64);
        // Another workspace gets another key.
        let other = load_or_create(&dir.path().join("other")).unwrap();
        assert_ne!(other.public(), k.public());
    }

    #[test]
    fn an_existing_key_is_never_replaced_even_by_a_racing_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, b"someone else's").unwrap();
        let e = create_private(&path, b"mine").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
        // Several threads making the same workspace's key agree on one.
        let ws = dir.path().join("race");
        let keys: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| load_or_create(&ws).unwrap().public().hex()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    }

    #[test]
    fn a_key_others_may_read_or_a_malformed_one_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        let k = load_or_create(ws).unwrap();
        let path = key_path(ws);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(ws).unwrap_err().to_string();
        assert!(e.contains(KEY_FILE) && e.contains("chmod 600"), "{e}");
        // The public key is still known from its own file.
        assert_eq!(public_key(ws).unwrap(), Some(k.public()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = load(ws).unwrap_err().to_string();
        assert!(e.contains("not an Ed25519 PKCS#8 key"), "{e}");
    }

    #[test]
    fn pem_and_base64_round_trip() {
        for n in 0..10 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 5) as u8).collect();
            assert_eq!(unbase64(&base64(&bytes)).unwrap(), bytes);
        }
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
        // RFC 8410 section 10.3's example private key.
        let rfc = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let der = unpem("PRIVATE KEY", rfc).unwrap();
        assert_eq!(der[..16], PKCS8_PREFIX);
        assert_eq!(
            hex(&der[16..]),
            "d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842"
        );
        assert_eq!(pem("PRIVATE KEY", &der), rfc);
        assert_eq!(unhex("0aFf").unwrap(), [10, 255]);
        assert!(unhex("abc").is_none() && unhex("zz").is_none());
    }
}
