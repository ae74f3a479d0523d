//! The deletion certificate: what a compliance report of a deletion certifies,
//! signed with the workspace's Ed25519 key ([`crate::audit::key`]), and its check
//! (`lethe report verify`).
//!
//! **What is signed.** The certificate is a JSON object ([`Certificate`]) of
//! strings, integers and `null`s only: its format (`lethe-deletion-certificate/1`),
//! the report kind (`deletion`), when it was issued, the run folder, the method
//! (id, version, plugin file SHA-256), the SHA-256 of the original model, of the
//! unlearned model, of the forget list and of the dataset, the number of samples
//! forgotten, the verdict summary (outcome, headline, and each check's name,
//! outcome and measured value), the audit log's head when the report was made
//! (the sequence number and hash of the report job's start record) and the
//! signer's public key with its SHA-256 fingerprint. The Ed25519 signature
//! (RFC 8032) covers the exact bytes of the object's canonical JSON form,
//! RFC 8785 (JCS) for these value types: object keys sorted by their UTF-16 code
//! units, no whitespace, strings with only `"`, `\` and control characters
//! escaped (`\b \t \n \f \r`, others as `\u00xx`), integers in decimal
//! ([`canonical_json`]). A verifier re-serialises the object it reads, so the
//! certificate may be pretty-printed or embedded in another JSON document.
//!
//! **Where it is.** `lethe report` writes `<report>.cert.json` beside every
//! deletion report (`{"certificate": …, "signature": {"algorithm": "Ed25519",
//! "value": <128 hex digits>, …}}`), the JSON report carries the same two
//! members at its top level, and the PDF and HTML show the certificate's values
//! in a last section. The report job's end record in the audit log holds the
//! certificate and signature too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::ReportError;
use super::deletion::DeletionReport;
use super::doc::{Block, Style};
use super::format::utc_datetime;
use crate::audit::key::{PublicKey, WorkspaceKey, hex, unhex};
use crate::audit::{AuditLog, Record, audit_path, path_sha256};
use crate::jobs::run_record::shell_quote;

/// The certificate format this version writes and checks.
pub const FORMAT: &str = "lethe-deletion-certificate/1";

/// The detached certificate's file name for a report file (`report.pdf` →
/// `report.pdf.cert.json`).
pub fn detached_path(report: &Path) -> PathBuf {
    let mut name = report.as_os_str().to_os_string();
    name.push(".cert.json");
    PathBuf::from(name)
}

/// The method of the certified deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedMethod {
    /// Plugin descriptor id.
    pub id: String,
    /// Plugin version.
    pub version: String,
    /// SHA-256 of the plugin's library file.
    pub plugin_sha256: Option<String>,
}

/// The SHA-256 (hex) of the deletion's files, as its run recorded them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedHashes {
    /// The model before the deletion.
    pub original_model: Option<String>,
    /// The model after it.
    pub unlearned_model: Option<String>,
    /// The list of forgotten samples.
    pub forget_list: Option<String>,
    /// The training data.
    pub dataset: Option<String>,
}

/// One check of the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedCheck {
    /// What was checked.
    pub name: String,
    /// `PASS`, `FAIL`, `INCONCLUSIVE`.
    pub outcome: String,
    /// What was measured, as the report prints it.
    pub measured: String,
}

/// The verdict summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedVerdict {
    /// `PASS`, `FAIL`, `INCONCLUSIVE`.
    pub outcome: String,
    /// The verdict's sentence.
    pub headline: String,
    /// The checks behind it.
    pub checks: Vec<CertifiedCheck>,
}

/// The per-sample verification behind the report (`lethe verify-samples`), as
/// the report prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedPerSample {
    /// SHA-256 of its `per_sample.json`.
    pub file_sha256: Option<String>,
    /// Shadow models (trained, then unlearned by the same method).
    pub shadow_models: u64,
    /// Significance level.
    pub alpha: String,
    /// Forgotten samples told apart after the deletion, `k/n = x % [lo, hi]`.
    pub forgotten_told_apart: String,
    /// Never-seen samples told apart: the test's own false-positive rate.
    pub never_seen_told_apart: String,
    /// U-LiRA's AUC on the unlearned model, with its interval.
    pub auc_after: String,
    /// LiRA's AUC on the original model, with its interval.
    pub auc_before: String,
}

/// The audit log's head when the report was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedAudit {
    /// The log's file name in the workspace.
    pub log: String,
    /// Sequence number of the head record (the report job's start).
    pub head_seq: i64,
    /// Its hash.
    pub head: String,
}

/// Who signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signer {
    /// `Ed25519`.
    pub algorithm: String,
    /// The public key, 64 hex digits (RFC 8032's 32-byte encoding).
    pub public_key: String,
    /// SHA-256 (hex) of the public key's 32 bytes: its fingerprint.
    pub public_key_sha256: String,
}

/// The certificate: every member is signed (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// [`FORMAT`].
    pub format: String,
    /// `deletion`.
    pub report_kind: String,
    /// When the report and its certificate were made (Unix seconds).
    pub issued_unix: i64,
    /// The same, `YYYY-MM-DD HH:MM:SS UTC`.
    pub issued: String,
    /// The run folder of the deletion (absolute).
    pub run: String,
    /// The method.
    pub method: CertifiedMethod,
    /// The files' hashes.
    pub hashes: CertifiedHashes,
    /// Training samples forgotten.
    pub forget_samples: u64,
    /// The verdict summary.
    pub verdict: CertifiedVerdict,
    /// The per-sample verification summary, when the report has one (absent
    /// from certificates made before it existed, which still verify).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_sample: Option<CertifiedPerSample>,
    /// The audit log's head.
    pub audit: CertifiedAudit,
    /// The signer.
    pub signer: Signer,
}

/// The signature over a certificate's canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureBlock {
    /// `Ed25519`.
    pub algorithm: String,
    /// What the signature covers, in words.
    pub signed: String,
    /// SHA-256 (hex) of the signed bytes, for people comparing by hand.
    pub signed_sha256: String,
    /// The 64-byte signature, 128 hex digits.
    pub value: String,
}

/// A certificate with its signature: the content of `<report>.cert.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCertificate {
    /// The certificate.
    pub certificate: Certificate,
    /// Its signature.
    pub signature: SignatureBlock,
}

/// What [`SignatureBlock::signed`] says.
const SIGNED_TEXT: &str =
    "the RFC 8785 canonical JSON (sorted keys, no whitespace) of the `certificate` member";

fn certify_error(message: String) -> ReportError {
    ReportError::Input {
        path: PathBuf::new(),
        message,
    }
}

impl Certificate {
    /// The certificate of a deletion report issued at `issued_unix`, with the
    /// audit log's head `head` (the report job's start record) and the signer's
    /// public key.
    pub fn of(
        report: &DeletionReport,
        issued_unix: i64,
        head: &Record,
        signer: &PublicKey,
    ) -> Certificate {
        let run = &report.run;
        Certificate {
            format: FORMAT.into(),
            report_kind: "deletion".into(),
            issued_unix,
            issued: utc_datetime(issued_unix),
            run: std::path::absolute(&report.run_dir)
                .unwrap_or_else(|_| report.run_dir.clone())
                .display()
                .to_string(),
            method: CertifiedMethod {
                id: run.method.id.clone(),
                version: run.method.version.clone(),
                plugin_sha256: run.method.library.sha256.clone(),
            },
            hashes: CertifiedHashes {
                original_model: run.original.sha256.clone(),
                unlearned_model: run.unlearned.as_ref().and_then(|u| u.sha256.clone()),
                forget_list: run.forget.list.sha256.clone(),
                dataset: run.data.sha256.clone(),
            },
            forget_samples: run.forget.samples as u64,
            verdict: CertifiedVerdict {
                outcome: report.verdict.outcome.label().into(),
                headline: report.verdict.headline.clone(),
                checks: report
                    .verdict
                    .checks
                    .iter()
                    .map(|c| CertifiedCheck {
                        name: c.name.clone(),
                        outcome: c.outcome.label().into(),
                        measured: c.measured.clone(),
                    })
                    .collect(),
            },
            per_sample: report.per_sample.as_ref().map(|v| {
                let share = |q: Option<super::sources::ShareView>| {
                    q.map_or_else(|| "not measured".to_string(), |q| q.text())
                };
                let shares = v.after.per_sample.as_ref();
                let auc = |m: &super::sources::MembershipView| {
                    super::format::with_ci(m.auc, m.auc_pair())
                };
                CertifiedPerSample {
                    file_sha256: v.file_sha256.clone(),
                    shadow_models: v.settings.shadow_models,
                    alpha: v.settings.alpha.to_string(),
                    forgotten_told_apart: share(shares.map(|p| p.forget)),
                    never_seen_told_apart: share(shares.and_then(|p| p.nonmember)),
                    auc_after: auc(&v.after.forget),
                    auc_before: auc(&v.before.forget),
                }
            }),
            audit: CertifiedAudit {
                log: crate::audit::AUDIT_FILE.into(),
                head_seq: head.seq,
                head: head.hash.clone(),
            },
            signer: Signer {
                algorithm: "Ed25519".into(),
                public_key: signer.hex(),
                public_key_sha256: signer.fingerprint(),
            },
        }
    }

    /// The bytes the signature covers: [`canonical_json`] of the certificate.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, ReportError> {
        let v = serde_json::to_value(self)
            .map_err(|e| certify_error(format!("cannot encode the certificate: {e}")))?;
        canonical_json(&v)
            .map(String::into_bytes)
            .map_err(|e| certify_error(format!("cannot encode the certificate: {e}")))
    }

    /// Signs it with `key` (which must be the certificate's signer).
    pub fn sign(self, key: &WorkspaceKey) -> Result<SignedCertificate, ReportError> {
        if self.signer.public_key != key.public().hex() {
            return Err(certify_error(
                "the certificate names another signer than the key signing it".into(),
            ));
        }
        let bytes = self.canonical_bytes()?;
        let signature = SignatureBlock {
            algorithm: "Ed25519".into(),
            signed: SIGNED_TEXT.into(),
            signed_sha256: format!("{:x}", Sha256::digest(&bytes)),
            value: hex(&key.sign(&bytes)),
        };
        Ok(SignedCertificate {
            certificate: self,
            signature,
        })
    }
}

impl SignedCertificate {
    /// The detached file's bytes (pretty JSON).
    pub fn to_file_bytes(&self) -> Result<Vec<u8>, ReportError> {
        let mut v = serde_json::to_vec_pretty(self)
            .map_err(|e| certify_error(format!("cannot encode the certificate: {e}")))?;
        v.push(b'\n');
        Ok(v)
    }

    /// What the audit record of the report keeps of it.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// RFC 8785 (JCS) canonical JSON of `v`, for values without fractional numbers:
/// object members sorted by their keys' UTF-16 code units, no whitespace,
/// strings with `"` `\` and U+0000–U+001F escaped (`\b \t \n \f \r`, the rest as
/// `\u00xx`), integers in decimal. Refuses numbers that are not integers of at
/// most 2^53 − 1 in magnitude (JCS would print those differently from serde).
pub fn canonical_json(v: &Value) -> Result<String, String> {
    let mut out = String::new();
    write_canonical(v, &mut out)?;
    Ok(out)
}

fn write_canonical(v: &Value, out: &mut String) -> Result<(), String> {
    const MAX_SAFE: u64 = (1 << 53) - 1;
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64()
                && i.unsigned_abs() <= MAX_SAFE
            {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64()
                && u <= MAX_SAFE
            {
                out.push_str(&u.to_string());
            } else {
                return Err(format!(
                    "the number {n} is not an integer of at most 2^53 - 1 in magnitude"
                ));
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out)?;
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_canonical(&m[k], out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The certificate section of a report: what is certified in words, then every
/// value, and the command that checks it. `file_name` is the detached
/// certificate's name, `verify` the command line that checks it.
pub fn blocks(c: &SignedCertificate, file_name: &str, verify: &str) -> Vec<Block> {
    let cert = &c.certificate;
    let h = &cert.hashes;
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let sig = &c.signature.value;
    // Two lines of 64 digits, like the hashes above it.
    let sig_text = if sig.len() == 128 {
        format!("{} {}", &sig[..64], &sig[64..])
    } else {
        sig.clone()
    };
    vec![
        Block::Heading("Deletion certificate".into()),
        Block::Paragraph(format!(
            "This report is certified. The certificate below states the SHA-256 of the \
             original model, of the unlearned model, of the forget list and of the dataset, \
             the verdict, and the head of the workspace's audit log when this report was made \
             (the record of this report's own start), and it is signed with the workspace's \
             Ed25519 key, whose public key is printed here. The signature covers the \
             certificate's canonical JSON (RFC 8785: keys sorted, no whitespace), kept with \
             the signature beside this report in {file_name} (and in the JSON report). \
             `lethe report verify` checks the signature and whose key made it, the files' \
             hashes against the certified ones, and that the certified audit record is still \
             in an intact log; it names whatever differs."
        )),
        Block::Fields {
            name: "certificate".into(),
            fields: vec![
                (
                    "Certificate format".into(),
                    cert.format.clone(),
                    Style::Mono,
                ),
                ("Issued".into(), cert.issued.clone(), Style::Text),
                (
                    "Original model SHA-256".into(),
                    or_dash(&h.original_model),
                    Style::Mono,
                ),
                (
                    "Unlearned model SHA-256".into(),
                    or_dash(&h.unlearned_model),
                    Style::Mono,
                ),
                (
                    "Forget list SHA-256".into(),
                    or_dash(&h.forget_list),
                    Style::Mono,
                ),
                ("Dataset SHA-256".into(), or_dash(&h.dataset), Style::Mono),
                (
                    "Forgotten samples".into(),
                    cert.forget_samples.to_string(),
                    Style::Text,
                ),
                (
                    "Method".into(),
                    format!("{} {}", cert.method.id, cert.method.version),
                    Style::Mono,
                ),
                (
                    "Verdict".into(),
                    format!("{}: {}", cert.verdict.outcome, cert.verdict.headline),
                    Style::Text,
                ),
                (
                    "Audit log head".into(),
                    format!(
                        "record #{} of {} (this report's start)",
                        cert.audit.head_seq, cert.audit.log
                    ),
                    Style::Text,
                ),
                (
                    "Audit log head hash".into(),
                    cert.audit.head.clone(),
                    Style::Mono,
                ),
                (
                    "Public key (Ed25519, hex)".into(),
                    cert.signer.public_key.clone(),
                    Style::Mono,
                ),
                (
                    "Public key fingerprint (SHA-256)".into(),
                    cert.signer.public_key_sha256.clone(),
                    Style::Mono,
                ),
                (
                    "Signed bytes SHA-256".into(),
                    c.signature.signed_sha256.clone(),
                    Style::Mono,
                ),
                ("Signature (Ed25519, hex)".into(), sig_text, Style::Mono),
            ],
        },
        Block::Paragraph("Check it with:".into()),
        Block::Code(vec![verify.to_string()]),
    ]
}

/// The `lethe report verify` command for a deletion report's certificate file.
pub fn verify_command(d: &DeletionReport, cert_file: &str) -> String {
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let mut cmd = format!("lethe report verify {}", shell_quote(cert_file));
    if let Some(u) = &d.run.unlearned {
        cmd.push_str(&format!(" --model {}", q(&u.path)));
    }
    cmd.push_str(&format!(
        " --original {} --forget {}",
        q(&d.run.original.path),
        q(&d.run.forget.list.path)
    ));
    cmd
}

/// Reads a certificate file (`.cert.json` or a JSON report) as JSON: the
/// `certificate` and `signature` members. A PDF or HTML report is read through
/// its detached `<report>.cert.json`. Returns the file read and the members.
pub fn read_raw(path: &Path) -> Result<(PathBuf, Value, Value), ReportError> {
    let input = |p: &Path, message: String| ReportError::Input {
        path: p.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| input(path, e.to_string()))?;
    let (file, v): (PathBuf, Value) = match serde_json::from_slice(&bytes) {
        Ok(v) => (path.to_path_buf(), v),
        Err(e) => {
            let detached = detached_path(path);
            if !detached.is_file() {
                return Err(input(
                    path,
                    format!(
                        "not a certificate (not JSON: {e}); give the `.cert.json` written \
                         beside the report, or the JSON report"
                    ),
                ));
            }
            let bytes = std::fs::read(&detached).map_err(|e| input(&detached, e.to_string()))?;
            let v = serde_json::from_slice(&bytes)
                .map_err(|e| input(&detached, format!("not JSON: {e}")))?;
            (detached, v)
        }
    };
    let (Some(c), Some(s)) = (v.get("certificate"), v.get("signature")) else {
        return Err(input(
            &file,
            "holds no certificate (no `certificate` and `signature` members): only deletion \
             reports written by `lethe report` carry one"
                .into(),
        ));
    };
    Ok((file.clone(), c.clone(), s.clone()))
}

/// Reads a certificate file into its typed form.
pub fn read(path: &Path) -> Result<SignedCertificate, ReportError> {
    let (file, c, s) = read_raw(path)?;
    let v = serde_json::json!({"certificate": c, "signature": s});
    serde_json::from_value(v).map_err(|e| ReportError::Input {
        path: file,
        message: format!("not a {FORMAT} certificate: {e}"),
    })
}

/// What `lethe report verify` is asked.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    /// The certificate file (`.cert.json`, a JSON report, or a report beside its
    /// `.cert.json`).
    pub file: PathBuf,
    /// The unlearned model to check.
    pub model: Option<PathBuf>,
    /// The original model to check.
    pub original: Option<PathBuf>,
    /// The forget list to check.
    pub forget: Option<PathBuf>,
    /// The dataset to check.
    pub data: Option<PathBuf>,
    /// The workspace whose key and audit log the certificate is checked against.
    pub workspace: PathBuf,
}

/// How one finding came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Holds.
    Ok,
    /// Does not hold.
    Fail,
    /// Worth knowing, neither.
    Note,
}

/// One thing checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How it came out.
    pub level: Level,
    /// What was found, naming what differs.
    pub message: String,
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    /// The file read (a report's detached certificate when given the report).
    pub file: PathBuf,
    /// The certificate, when it has the fields of [`FORMAT`].
    pub certificate: Option<Certificate>,
    /// Everything checked, in order.
    pub findings: Vec<Finding>,
}

impl Verification {
    /// Whether everything checked holds.
    pub fn ok(&self) -> bool {
        self.findings.iter().all(|f| f.level != Level::Fail)
    }

    /// The findings that do not hold.
    pub fn failures(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.level == Level::Fail)
    }
}

struct Findings(Vec<Finding>);

impl Findings {
    fn ok(&mut self, m: String) {
        self.0.push(Finding {
            level: Level::Ok,
            message: m,
        });
    }
    fn fail(&mut self, m: String) {
        self.0.push(Finding {
            level: Level::Fail,
            message: m,
        });
    }
    fn note(&mut self, m: String) {
        self.0.push(Finding {
            level: Level::Note,
            message: m,
        });
    }
}

/// Checks a certificate: its signature (and whether the workspace's key made
/// it), the certificate against the one its report job recorded in the audit
/// log, the audit log (intact, and still holding the certified head record),
/// the deletion's unlearn job in the log, and the given files' hashes. `Err`
/// only when the file holds no certificate at all.
pub fn verify(req: &VerifyRequest) -> Result<Verification, ReportError> {
    let (file, cert_v, sig_v) = read_raw(&req.file)?;
    let mut f = Findings(Vec::new());
    let cert: Option<Certificate> = match serde_json::from_value(cert_v.clone()) {
        Ok(c) => Some(c),
        Err(e) => {
            f.fail(format!(
                "the certificate does not have the fields of a {FORMAT} certificate: {e}"
            ));
            None
        }
    };
    if let Some(c) = &cert
        && c.format != FORMAT
    {
        f.fail(format!(
            "the certificate's format is {}, not {FORMAT} (made by another version of Lethe?)",
            c.format
        ));
    }
    let signer = check_signature(&cert_v, &sig_v, &mut f);
    check_workspace_key(signer.as_ref(), &req.workspace, &mut f);
    let log_path = audit_path(&req.workspace);
    let records = read_log(&log_path, &mut f);
    if let Some(records) = &records {
        check_recorded(&cert_v, &sig_v, records, &mut f);
        if let Some(c) = &cert {
            check_head(c, records, &log_path, &mut f);
            check_deletion(c, records, &mut f);
        }
    }
    if let Some(c) = &cert {
        check_files(c, req, &mut f);
    }
    Ok(Verification {
        file,
        certificate: cert,
        findings: f.0,
    })
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// The signature over the canonical bytes of the certificate as read; returns
/// the signer's key when it is a valid key.
fn check_signature(cert: &Value, sig: &Value, f: &mut Findings) -> Option<PublicKey> {
    if str_at(sig, "/algorithm") != Some("Ed25519") {
        f.fail(format!(
            "the signature's algorithm is {}, not Ed25519",
            sig.get("algorithm").unwrap_or(&Value::Null)
        ));
        return None;
    }
    let Some(key) = str_at(cert, "/signer/public_key").and_then(PublicKey::from_hex) else {
        f.fail("the certificate's signer.public_key is not an Ed25519 public key".into());
        return None;
    };
    let fp = key.fingerprint();
    if str_at(cert, "/signer/public_key_sha256") != Some(fp.as_str()) {
        f.fail(format!(
            "the certificate's key fingerprint signer.public_key_sha256 ({}) is not the \
             SHA-256 of its public key ({fp})",
            str_at(cert, "/signer/public_key_sha256").unwrap_or("-")
        ));
    }
    let Some(sig_bytes) = str_at(sig, "/value")
        .and_then(unhex)
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
    else {
        f.fail("the signature value is not 128 hex digits".into());
        return Some(key);
    };
    let bytes = match canonical_json(cert) {
        Ok(s) => s.into_bytes(),
        Err(e) => {
            f.fail(format!(
                "the certificate cannot be put in canonical form, so it was not what was \
                 signed: {e}"
            ));
            return Some(key);
        }
    };
    if key.verify(&bytes, &sig_bytes) {
        f.ok(format!(
            "signature: a valid Ed25519 signature of this certificate by key {fp}"
        ));
    } else {
        f.fail(format!(
            "signature: INVALID: this certificate is not what key {fp} signed (it was changed \
             after it was signed, or the signature was)"
        ));
    }
    Some(key)
}

fn check_workspace_key(signer: Option<&PublicKey>, workspace: &Path, f: &mut Findings) {
    let Some(signer) = signer else {
        return;
    };
    let path = crate::audit::key::key_path(workspace);
    match crate::audit::key::public_key(workspace) {
        Ok(Some(k)) if k == *signer => f.ok(format!(
            "the signing key is this workspace's key ({})",
            path.display()
        )),
        Ok(Some(k)) => f.fail(format!(
            "signed by key {}, which is not this workspace's key ({}, fingerprint {})",
            signer.fingerprint(),
            path.display(),
            k.fingerprint()
        )),
        Ok(None) => f.fail(format!(
            "the workspace {} has no signing key ({}), so this certificate was not made in \
             it (give the workspace with --workspace)",
            workspace.display(),
            path.display()
        )),
        Err(e) => f.fail(format!("the workspace's signing key: {e}")),
    }
}

fn read_log(path: &Path, f: &mut Findings) -> Option<Vec<Record>> {
    if !path.is_file() {
        f.fail(format!(
            "no audit log at {}: the certified audit head cannot be checked (give the \
             workspace with --workspace)",
            path.display()
        ));
        return None;
    }
    let result = AuditLog::open_existing(path).and_then(|log| {
        let v = log.verify(None)?;
        Ok((v, log.records()?))
    });
    match result {
        Ok((v, records)) => {
            if v.ok() {
                f.ok(format!(
                    "audit log {}: {} records, chain intact",
                    path.display(),
                    v.records
                ));
            }
            for p in &v.problems {
                f.fail(format!("audit log {}: {}", path.display(), p.message));
            }
            Some(records)
        }
        Err(e) => {
            f.fail(format!("audit log: {e}"));
            None
        }
    }
}

/// Every leaf of `a` and `b` that differs, as `(path, a's value, b's value)`.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<(String, String, String)>) {
    let show = |v: Option<&Value>| match v {
        None => "(absent)".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => differences(u, v, &p, out),
                    (u, v) => out.push((p, show(u), show(v))),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                differences(u, v, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push((path.to_string(), show(Some(a)), show(Some(b)))),
        _ => {}
    }
}

/// The certificate against the one its report job recorded (found by its
/// signature): names each changed field.
fn check_recorded(cert: &Value, sig: &Value, records: &[Record], f: &mut Findings) {
    let Some(value) = str_at(sig, "/value") else {
        return;
    };
    let found = records.iter().rev().find(|r| {
        r.entry.kind == "report"
            && str_at(&r.entry.details, "/certificate/signature/value")
                .is_some_and(|v| v.eq_ignore_ascii_case(value))
    });
    let Some(r) = found else {
        f.fail(format!(
            "no report record of the audit log holds this certificate (signature {}…): it was \
             not made in this workspace, or its record is gone",
            value.get(..16).unwrap_or(value)
        ));
        return;
    };
    let recorded = r
        .entry
        .details
        .pointer("/certificate/certificate")
        .unwrap_or(&Value::Null);
    let mut diffs = Vec::new();
    differences(cert, recorded, "", &mut diffs);
    if diffs.is_empty() {
        f.ok(format!(
            "the certificate is the one its report job recorded in audit record #{}",
            r.seq
        ));
    }
    for (path, here, there) in diffs {
        f.fail(format!(
            "certificate field `{path}` was changed: this file says {here}, the certificate \
             signed and recorded in audit record #{} says {there}",
            r.seq
        ));
    }
}

/// The certified head must still be in the log, unchanged.
fn check_head(c: &Certificate, records: &[Record], log: &Path, f: &mut Findings) {
    let (seq, head) = (c.audit.head_seq, &c.audit.head);
    match records.iter().find(|r| r.seq == seq) {
        None => f.fail(format!(
            "the certified audit head, record #{seq} ({head}), is not in the log {}: it was \
             deleted",
            log.display()
        )),
        Some(r) if !r.hash.eq_ignore_ascii_case(head) => f.fail(format!(
            "audit record #{seq} now has hash {}, but the certificate certifies {head}: the log \
             was rewritten after the certificate was made",
            r.hash
        )),
        Some(_) => f.ok(format!(
            "the certified audit head, record #{seq}, is in the log unchanged"
        )),
    }
}

/// The certified deletion must be a successful unlearn job of the log, before
/// the certified head: it read the original model and the forget list and wrote
/// the unlearned model.
fn check_deletion(c: &Certificate, records: &[Record], f: &mut Findings) {
    let h = &c.hashes;
    let Some(unlearned) = &h.unlearned_model else {
        f.note("the certificate records no unlearned model hash to look up in the log".into());
        return;
    };
    let has = |files: &[crate::audit::FileRef], sha: &str| {
        files.iter().any(|x| {
            x.sha256
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(sha))
        })
    };
    let jobs: Vec<&Record> = records
        .iter()
        .filter(|r| {
            r.seq < c.audit.head_seq
                && r.entry.kind == "unlearn"
                && r.entry.status == "succeeded"
                && has(&r.entry.outputs, unlearned)
        })
        .collect();
    if jobs.is_empty() {
        f.fail(format!(
            "the unlearned model's sha256 {unlearned} is the output of no successful unlearn \
             job in the audit log (before record #{})",
            c.audit.head_seq
        ));
        return;
    }
    let mut best: Option<(&Record, Vec<String>)> = None;
    for r in &jobs {
        let mut wrong = Vec::new();
        for (what, sha) in [
            ("original model", &h.original_model),
            ("forget list", &h.forget_list),
        ] {
            if let Some(sha) = sha
                && !has(&r.entry.inputs, sha)
            {
                wrong.push(format!("the certified {what} {sha}"));
            }
        }
        if best.as_ref().is_none_or(|b| wrong.len() < b.1.len()) {
            best = Some((r, wrong));
        }
    }
    if let Some((r, wrong)) = best {
        if wrong.is_empty() {
            f.ok(format!(
                "the deletion is in the audit log: unlearn record #{} read the certified original \
                 model and forget list and wrote the certified unlearned model",
                r.seq
            ));
        } else {
            f.fail(format!(
                "unlearn record #{} wrote the certified unlearned model, but did not read {}",
                r.seq,
                wrong.join(" or ")
            ));
        }
    }
}

fn check_files(c: &Certificate, req: &VerifyRequest, f: &mut Findings) {
    let h = &c.hashes;
    let files = [
        ("unlearned model", &req.model, &h.unlearned_model),
        ("original model", &req.original, &h.original_model),
        ("forget list", &req.forget, &h.forget_list),
        ("dataset", &req.data, &h.dataset),
    ];
    if files.iter().all(|(_, p, _)| p.is_none()) {
        f.note(
            "no files given (--model, --original, --forget, --data): their hashes were not \
             checked"
                .into(),
        );
    }
    for (what, path, certified) in files {
        let Some(path) = path else {
            continue;
        };
        let shown = path.display();
        let Some(certified) = certified else {
            f.fail(format!(
                "the certificate records no SHA-256 for the {what}, so {shown} cannot be checked"
            ));
            continue;
        };
        match path_sha256(path) {
            None => f.fail(format!("the {what} {shown} cannot be read")),
            Some(sha) if sha.eq_ignore_ascii_case(certified) => {
                f.ok(format!("the {what} {shown} has the certified sha256 {sha}"))
            }
            Some(sha) => f.fail(format!(
                "the {what} {shown} differs: certificate says sha256 {certified}, file has {sha}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_strips_whitespace_and_escapes_like_rfc_8785() {
        let v: Value = serde_json::from_str(
            r#"{ "b": [1, -2, {"z": null, "a": true}], "a": "x\"y\\z\n\u0001é€", "\u00e9": 0,
                 "A": "", "aa": 9007199254740991 }"#,
        )
        .unwrap();
        assert_eq!(
            canonical_json(&v).unwrap(),
            "{\"A\":\"\",\"a\":\"x\\\"y\\\\z\\n\\u0001é€\",\"aa\":9007199254740991,\
             \"b\":[1,-2,{\"a\":true,\"z\":null}],\"é\":0}"
        );
        // Keys sort by UTF-16 code units (RFC 8785 section 3.2.3): U+10000 (a
        // surrogate pair, 0xD800…) before U+FFFD.
        let v = serde_json::json!({"\u{fffd}": 1, "\u{10000}": 2});
        assert_eq!(
            canonical_json(&v).unwrap(),
            "{\"\u{10000}\":2,\"\u{fffd}\":1}"
        );
        for bad in ["1.5", "9007199254740992", "-9007199254740992", "1e3"] {
            let v: Value = serde_json::from_str(bad).unwrap();
            assert!(canonical_json(&v).is_err(), "{bad}");
        }
        // Reformatting does not change the canonical form.
        let a: Value = serde_json::from_str(r#"{"k": [1, 2], "j": "v"}"#).unwrap();
        let b: Value = serde_json::from_str("{\n  \"j\":\"v\",\n  \"k\":[1,2]\n}").unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
    }

    fn sample(key: &WorkspaceKey) -> Certificate {
        Certificate {
            format: FORMAT.into(),
            report_kind: "deletion".into(),
            issued_unix: 1_700_000_000,
            issued: utc_datetime(1_700_000_000),
            run: "/runs/r1".into(),
            method: CertifiedMethod {
                id: "org.lethe.baseline.finetune".into(),
                version: "0.1.0".into(),
                plugin_sha256: Some("11".repeat(32)),
            },
            hashes: CertifiedHashes {
                original_model: Some("aa".repeat(32)),
                unlearned_model: Some("bb".repeat(32)),
                forget_list: Some("cc".repeat(32)),
                dataset: None,
            },
            forget_samples: 300,
            verdict: CertifiedVerdict {
                outcome: "PASS".into(),
                headline: "every check \"passed\"".into(),
                checks: vec![CertifiedCheck {
                    name: "forget-set AUC".into(),
                    outcome: "PASS".into(),
                    measured: "0.5012 [0.47, 0.53]".into(),
                }],
            },
            per_sample: None,
            audit: CertifiedAudit {
                log: "audit.sqlite".into(),
                head_seq: 7,
                head: "dd".repeat(32),
            },
            signer: Signer {
                algorithm: "Ed25519".into(),
                public_key: key.public().hex(),
                public_key_sha256: key.public().fingerprint(),
            },
        }
    }

    #[test]
    fn a_signed_certificate_round_trips_and_any_change_breaks_its_signature() {
        let key = WorkspaceKey::from_seed(&[7; 32], Path::new("k"));
        let signed = sample(&key).sign(&key).unwrap();
        let bytes = signed.certificate.canonical_bytes().unwrap();
        // The exact bytes: sorted keys, compact, the fields as given.
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("{\"audit\":{\"head\":\""), "{text}");
        assert!(
            text.contains("\"headline\":\"every check \\\"passed\\\"\""),
            "{text}"
        );
        assert!(text.contains("\"dataset\":null"), "{text}");
        assert_eq!(
            signed.signature.signed_sha256,
            format!("{:x}", Sha256::digest(&bytes))
        );
        let sig: [u8; 64] = unhex(&signed.signature.value).unwrap().try_into().unwrap();
        assert!(key.public().verify(&bytes, &sig));
        // Through the file and back: the same certificate, still verifying.
        let file = signed.to_file_bytes().unwrap();
        let back: SignedCertificate = serde_json::from_slice(&file).unwrap();
        assert_eq!(back, signed);
        assert_eq!(back.certificate.canonical_bytes().unwrap(), bytes);
        // Deterministic: signing again gives the same signature.
        assert_eq!(sample(&key).sign(&key).unwrap(), signed);
        // Any change to a signed field breaks the signature.
        let mut v = serde_json::to_value(&signed.certificate).unwrap();
        let mut f = Findings(Vec::new());
        let sig_v = serde_json::to_value(&signed.signature).unwrap();
        check_signature(&v, &sig_v, &mut f);
        assert!(f.0.iter().all(|x| x.level == Level::Ok), "{:?}", f.0);
        v["hashes"]["unlearned_model"] = Value::from(format!("bc{}", "bb".repeat(31)));
        let mut f = Findings(Vec::new());
        check_signature(&v, &sig_v, &mut f);
        assert!(
            f.0.iter()
                .any(|x| x.level == Level::Fail && x.message.contains("INVALID")),
            "{:?}",
            f.0
        );
        // Another key cannot sign a certificate naming this one.
        let other = WorkspaceKey::from_seed(&[8; 32], Path::new("k2"));
        assert!(sample(&key).sign(&other).is_err());
    }

    #[test]
    fn differences_name_each_changed_leaf() {
        let a = serde_json::json!({"h": {"x": "1", "y": "2"}, "l": [1, 2], "k": 1});
        let b = serde_json::json!({"h": {"x": "1", "y": "3"}, "l": [1, 5], "m": 1});
        let mut d = Vec::new();
        differences(&a, &b, "", &mut d);
        let paths: Vec<&str> = d.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(paths, ["h.y", "k", "l[1]", "m"]);
        assert_eq!(d[0], ("h.y".into(), "2".into(), "3".into()));
    }

    #[test]
    fn the_detached_file_sits_beside_the_report() {
        assert_eq!(
            detached_path(Path::new("run/report.pdf")),
            PathBuf::from("run/report.pdf.cert.json")
        );
    }
}
