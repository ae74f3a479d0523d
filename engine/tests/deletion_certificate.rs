//! The deletion certificate (issue 21 item 3) as a user meets it: a real deletion
//! of the bundled demo classifier (fine-tuning for two batches, an evaluation and
//! a small metric attack), `lethe report` writing the PDF and JSON reports with
//! their signed certificate and the workspace key made once with mode 0600, and
//! `lethe report verify` passing on the untouched certificate and failing, naming
//! what differs, on a tampered certificate, a swapped model file and an edited,
//! a truncated and a consistently rewritten audit log. Also: a job killed outright
//! leaves its start record, listed by `lethe audit log` as unfinished, and records
//! name the uid's account, not `$USER`.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

mod common;

use common::{demo, plugin};

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_lethe-cli");
const T1: i64 = 1_700_000_000;

fn command(args: &[&str], cwd: &Path) -> Command {
    let mut c = Command::new(EXE);
    c.args(args)
        .current_dir(cwd)
        .env_remove("LETHE_PLUGIN_PATH")
        .env_remove("LETHE_WORKSPACE")
        // Someone else's name in the environment: records must not believe it.
        .env("USER", "not-the-uid-account")
        .env("XDG_DATA_HOME", cwd.join("no-user-plugins"));
    c
}

fn lethe(args: &[&str], cwd: &Path) -> Output {
    command(args, cwd).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    t
}

/// Runs a command that must fail with exit status 1; returns what it said.
fn fails(o: Output) -> String {
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    t
}

fn sha256(path: &Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The account name of this process's uid, as `id -un` prints it.
fn login() -> String {
    let o = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

struct Deletion {
    dir: tempfile::TempDir,
    plugins: String,
    ckpt: String,
    data: String,
    forget: String,
}

/// A deletion in a fresh workspace (the temporary folder, the commands' current
/// folder): unlearn, evaluate, attack.
fn deletion() -> Deletion {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().to_path_buf();
    let ws = ws.as_path();
    let plugins = ws.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for lib in ["lethe_baseline_finetune", "lethe_attack_metric"] {
        let src = plugin(lib);
        std::fs::copy(&src, plugins.join(src.file_name().unwrap())).unwrap();
    }
    let d = Deletion {
        plugins: plugins.display().to_string(),
        ckpt: demo("classifier.safetensors"),
        data: demo("mnist10k.npz"),
        forget: demo("forget.txt"),
        dir,
    };
    let common = ["--data", &d.data, "--forget", &d.forget, "--device", "cpu"];
    let mut args = vec![
        "--plugins",
        &d.plugins,
        "unlearn",
        "--method",
        "org.lethe.baseline.finetune",
        "--checkpoint",
        &d.ckpt,
        "--set",
        "epochs=1",
        "--set",
        "max_batches=2",
        "--seed",
        "3",
        "--out",
        "run",
    ];
    args.extend(common);
    ok(lethe(&args, ws));
    let mut args = vec![
        "evaluate",
        "--checkpoint",
        "run/model.safetensors",
        "--original",
        &d.ckpt,
        "--out",
        "run/evaluation",
    ];
    args.extend(common);
    ok(lethe(&args, ws));
    let mut args = vec![
        "--plugins",
        &d.plugins,
        "attack",
        "--attack",
        "org.lethe.attack.metric-mia",
        "--checkpoint",
        "run/model.safetensors",
        "--set",
        "metric=confidence",
        "--set",
        "shadow_size=1000",
        "--set",
        "heldout_size=500",
        "--bootstrap",
        "50",
        "--out",
        "run/attack-metric",
    ];
    args.extend(common);
    ok(lethe(&args, ws));
    d
}

fn pdftotext(pdf: &Path) -> String {
    let out = Command::new("pdftotext")
        .arg(pdf)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils, installed by installer/setup.sh)");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Recomputes every record's hash and link from `from` on, as someone able to
/// rewrite the database would (format-2 records, see `engine/src/audit/log.rs`):
/// `lethe audit verify` then passes, and only a head kept elsewhere tells.
fn rehash_chain(db: &rusqlite::Connection, from: i64) {
    type Row = (
        i64,
        i64,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        Option<i64>,
        Option<i64>,
        Option<String>,
        Option<i64>,
    );
    let rows: Vec<Row> = {
        let mut st = db
            .prepare(
                "SELECT seq, time_unix, user, host, lethe_version, kind, status, subject, \
                 plugin, inputs, outputs, details, prev_hash, format, uid, env_user, started \
                 FROM records ORDER BY seq",
            )
            .unwrap();
        st.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
                r.get(11)?,
                r.get(12)?,
                r.get(13)?,
                r.get(14)?,
                r.get(15)?,
                r.get(16)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let mut prev: Option<String> = None;
    for r in rows {
        let (seq, time, user, host, version, kind, status, subject) =
            (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7);
        let (plugin, inputs, outputs, details, stored_prev) = (r.8, r.9, r.10, r.11, r.12);
        assert_eq!(r.13, Some(2), "a format-2 record");
        let link = prev.clone().unwrap_or(stored_prev);
        if seq < from {
            prev = Some(
                db.query_row("SELECT hash FROM records WHERE seq = ?1", [seq], |x| {
                    x.get(0)
                })
                .unwrap(),
            );
            continue;
        }
        let canonical = serde_json::json!([
            "lethe-audit/2",
            seq,
            time,
            user,
            r.14,
            r.15,
            host,
            version,
            kind,
            status,
            subject,
            plugin,
            inputs,
            outputs,
            details,
            r.16,
        ])
        .to_string();
        let mut h = Sha256::new();
        h.update(link.as_bytes());
        h.update(b"\n");
        h.update(canonical.as_bytes());
        let hash = format!("{:x}", h.finalize());
        db.execute(
            "UPDATE records SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
            rusqlite::params![link, hash, seq],
        )
        .unwrap();
        prev = Some(hash);
    }
}

/// Opens the workspace's audit log with its append-only triggers dropped.
fn unlocked(ws: &Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(ws.join("audit.sqlite")).unwrap();
    db.execute_batch(
        "DROP TRIGGER IF EXISTS records_append_only_update; \
         DROP TRIGGER IF EXISTS records_append_only_delete;",
    )
    .unwrap();
    db
}

#[test]
fn a_certified_report_verifies_untouched_and_each_tampering_is_named() {
    let d = deletion();
    let ws = d.dir.path();
    let run = json(&ws.join("run/run.json"));
    let s = |v: &Value| v.as_str().unwrap().to_string();
    let (original_sha, unlearned_sha, forget_sha) = (
        s(&run["original"]["sha256"]),
        s(&run["unlearned"]["sha256"]),
        s(&run["forget"]["list"]["sha256"]),
    );

    // The PDF report: certified, the workspace key made now, private.
    let said = ok(lethe(
        &["report", "run", "--timestamp", &T1.to_string()],
        ws,
    ));
    assert!(said.contains("made this workspace's signing key"), "{said}");
    let key = ws.join("lethe-signing-key.pem");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the private key is private");
    let key_bytes = std::fs::read(&key).unwrap();
    let cert_file = ws.join("run/report.pdf.cert.json");
    let signed = json(&cert_file);
    let cert = &signed["certificate"];
    assert_eq!(cert["format"], "lethe-deletion-certificate/1");
    assert_eq!(cert["report_kind"], "deletion");
    assert_eq!(cert["issued_unix"], T1);
    assert_eq!(cert["hashes"]["original_model"], original_sha.as_str());
    assert_eq!(cert["hashes"]["unlearned_model"], unlearned_sha.as_str());
    assert_eq!(cert["hashes"]["forget_list"], forget_sha.as_str());
    assert_eq!(cert["forget_samples"], 300);
    assert_eq!(signed["signature"]["algorithm"], "Ed25519");
    let public_key = s(&cert["signer"]["public_key"]);
    let fingerprint = s(&cert["signer"]["public_key_sha256"]);
    let raw: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&public_key[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert_eq!(fingerprint, format!("{:x}", Sha256::digest(&raw)));
    // The certified head is the report's own start record.
    let log: Vec<Value> =
        serde_json::from_str(&ok(lethe(&["audit", "log", "--json"], ws))).unwrap();
    let head_seq = cert["audit"]["head_seq"].as_i64().unwrap();
    let head = log.iter().find(|r| r["seq"] == head_seq).unwrap();
    assert_eq!(head["hash"], cert["audit"]["head"]);
    assert_eq!(head["entry"]["kind"], "report");
    assert_eq!(head["entry"]["status"], "started");
    let end = log.last().unwrap();
    assert_eq!(end["started"], head_seq);
    assert_eq!(end["entry"]["details"]["certificate"], signed);
    let roles: Vec<&str> = end["entry"]["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["report", "certificate"]);

    // The PDF shows the certificate in words and values.
    let pdf = pdftotext(&ws.join("run/report.pdf"));
    let flat: String = pdf.split_whitespace().collect::<Vec<_>>().join(" ");
    for f in [
        "Deletion certificate",
        "signed with the workspace's Ed25519 key",
        "report.pdf.cert.json",
        &format!("Unlearned model SHA-256 {unlearned_sha}"),
        &format!("Original model SHA-256 {original_sha}"),
        &format!("Forget list SHA-256 {forget_sha}"),
        &public_key,
        &fingerprint,
        &format!("record #{head_seq} of audit.sqlite"),
        "lethe report verify report.pdf.cert.json --model",
    ] {
        assert!(flat.contains(f), "the PDF lacks {f:?}:\n{pdf}");
    }

    // The JSON report embeds the same kind of certificate; the key is reused.
    let said = ok(lethe(
        &["report", "run", "--format", "json", "--out", "r.json"],
        ws,
    ));
    assert!(
        !said.contains("made this workspace's signing key"),
        "{said}"
    );
    assert_eq!(std::fs::read(&key).unwrap(), key_bytes, "never remade");
    let r = json(&ws.join("r.json"));
    assert_eq!(
        r["certificate"]["signer"]["public_key"],
        public_key.as_str()
    );
    assert_eq!(r["certificate"]["hashes"], cert["hashes"]);
    assert!(r["signature"]["value"].as_str().unwrap().len() == 128);
    assert!(ws.join("r.json.cert.json").is_file());
    let said = ok(lethe(&["report", "verify", "r.json"], ws));
    assert!(
        said.contains("no files given") && said.contains("verified:"),
        "{said}"
    );
    // An existing certificate is never overwritten.
    std::fs::remove_file(ws.join("r.json")).unwrap();
    let again = fails(lethe(
        &["report", "run", "--format", "json", "--out", "r.json"],
        ws,
    ));
    assert!(again.contains("r.json.cert.json exists"), "{again}");

    // Untouched: everything holds, through the certificate, the JSON report and
    // the PDF (read through its `.cert.json`).
    let files = [
        "--model",
        "run/model.safetensors",
        "--original",
        &d.ckpt,
        "--forget",
        &d.forget,
        "--data",
        &d.data,
    ];
    let verify = |file: &str, extra: &[&str]| {
        let mut args = vec!["report", "verify", file];
        args.extend(extra);
        lethe(&args, ws)
    };
    for file in [
        "run/report.pdf.cert.json",
        "r.json.cert.json",
        "run/report.pdf",
    ] {
        let said = ok(verify(file, &files));
        assert!(said.contains("verified: the deletion of"), "{said}");
        assert!(!said.contains("FAIL"), "{said}");
        assert!(
            said.contains("the signing key is this workspace's key"),
            "{said}"
        );
        assert!(
            said.contains(&format!(
                "the unlearned model run/model.safetensors has the certified sha256 {unlearned_sha}"
            )),
            "{said}"
        );
        assert!(said.contains("is in the log unchanged"), "{said}");
        assert!(said.contains("the deletion is in the audit log"), "{said}");
    }

    // (a) A tampered certificate: one character of the unlearned model's hash.
    let mut tampered = signed.clone();
    let forged = format!(
        "{}{}",
        if unlearned_sha.starts_with('0') {
            '1'
        } else {
            '0'
        },
        &unlearned_sha[1..]
    );
    tampered["certificate"]["hashes"]["unlearned_model"] = Value::from(forged.clone());
    std::fs::write(
        ws.join("tampered.cert.json"),
        serde_json::to_vec_pretty(&tampered).unwrap(),
    )
    .unwrap();
    let said = fails(verify("tampered.cert.json", &files));
    for f in [
        "signature: INVALID",
        &format!(
            "certificate field `hashes.unlearned_model` was changed: this file says {forged}, \
             the certificate signed and recorded in audit record #{} says {unlearned_sha}",
            end["seq"]
        ),
        &format!(
            "the unlearned model run/model.safetensors differs: certificate says sha256 \
             {forged}, file has {unlearned_sha}"
        ),
        "tampered.cert.json does not verify",
    ] {
        assert!(said.contains(f), "{f:?} not in:\n{said}");
    }
    // Even reformatted, the untouched certificate still verifies (the signature
    // covers the canonical form), but a changed verdict does not.
    std::fs::write(
        ws.join("reformatted.cert.json"),
        serde_json::to_vec(&signed).unwrap(),
    )
    .unwrap();
    ok(verify("reformatted.cert.json", &[]));
    let mut verdict = signed.clone();
    verdict["certificate"]["verdict"]["outcome"] = Value::from("PASS");
    if signed["certificate"]["verdict"]["outcome"] == "PASS" {
        verdict["certificate"]["verdict"]["outcome"] = Value::from("FAIL");
    }
    std::fs::write(
        ws.join("verdict.cert.json"),
        serde_json::to_vec(&verdict).unwrap(),
    )
    .unwrap();
    let said = fails(verify("verdict.cert.json", &[]));
    assert!(
        said.contains("signature: INVALID") && said.contains("`verdict.outcome` was changed"),
        "{said}"
    );

    // (b) A swapped model file: the run's model replaced by the original.
    let model = ws.join("run/model.safetensors");
    let kept = std::fs::read(&model).unwrap();
    std::fs::copy(&d.ckpt, &model).unwrap();
    let said = fails(verify("run/report.pdf.cert.json", &files));
    assert!(
        said.contains(&format!(
            "the unlearned model run/model.safetensors differs: certificate says sha256 \
             {unlearned_sha}, file has {original_sha}"
        )),
        "{said}"
    );
    assert!(
        said.contains("signature: a valid Ed25519 signature"),
        "{said}"
    );
    std::fs::write(&model, &kept).unwrap();
    assert_eq!(sha256(&model), unlearned_sha);
    ok(verify("run/report.pdf.cert.json", &files));

    // (c) A rewritten audit log, each on a copy of the intact one.
    let db_path = ws.join("audit.sqlite");
    let intact = std::fs::read(&db_path).unwrap();
    let restore = || {
        std::fs::write(&db_path, &intact).unwrap();
        ok(lethe(&["audit", "verify"], ws));
    };
    // An edited record: the unlearn job's end says it failed.
    let unlearn_end = log
        .iter()
        .find(|r| r["entry"]["kind"] == "unlearn" && r["entry"]["status"] == "succeeded")
        .unwrap()["seq"]
        .as_i64()
        .unwrap();
    unlocked(ws)
        .execute(
            "UPDATE records SET status = 'failed: no' WHERE seq = ?1",
            [unlearn_end],
        )
        .unwrap();
    let said = fails(verify("run/report.pdf.cert.json", &files));
    assert!(
        said.contains(&format!("record #{unlearn_end} (unlearn at"))
            && said.contains("was changed after it was written"),
        "{said}"
    );
    assert!(
        said.contains("is the output of no successful unlearn job"),
        "{said}"
    );
    restore();
    // The certified head deleted.
    unlocked(ws)
        .execute("DELETE FROM records WHERE seq = ?1", [head_seq])
        .unwrap();
    let said = fails(verify("run/report.pdf.cert.json", &files));
    assert!(
        said.contains(&format!(
            "the certified audit head, record #{head_seq} ({}), is not in the log",
            s(&cert["audit"]["head"])
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("record #{head_seq} is missing")),
        "{said}"
    );
    restore();
    // The whole chain rewritten after an edit, consistently: `lethe audit verify`
    // is satisfied, the certificate is not.
    {
        let db = unlocked(ws);
        db.execute(
            "UPDATE records SET subject = 'nothing to see' WHERE seq = ?1",
            [unlearn_end],
        )
        .unwrap();
        rehash_chain(&db, unlearn_end);
    }
    ok(lethe(&["audit", "verify"], ws));
    let said = fails(verify("run/report.pdf.cert.json", &files));
    assert!(
        said.contains(&format!("audit record #{head_seq} now has hash"))
            && said.contains(&format!(
                "but the certificate certifies {}: the log was rewritten",
                s(&cert["audit"]["head"])
            )),
        "{said}"
    );
    restore();

    // Another workspace's key did not make it.
    let elsewhere = ws.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let other = lethe(
        &[
            "--workspace",
            elsewhere.to_str().unwrap(),
            "report",
            "verify",
            "run/report.pdf.cert.json",
        ],
        ws,
    );
    let said = fails(other);
    assert!(
        said.contains("has no signing key") && said.contains("no audit log at"),
        "{said}"
    );
    ok(verify("run/report.pdf.cert.json", &files));
}

#[test]
fn a_killed_job_leaves_its_start_record_and_records_name_the_uid_s_account() {
    let d = deletion();
    let ws = d.dir.path();
    let login = login();

    // Every job was recorded when it started and when it ended, as the uid's
    // account; `$USER` said someone else, which is kept beside it.
    let log: Vec<Value> =
        serde_json::from_str(&ok(lethe(&["audit", "log", "--json"], ws))).unwrap();
    let shape: Vec<(String, String)> = log
        .iter()
        .map(|r| {
            (
                r["entry"]["kind"].as_str().unwrap().to_string(),
                r["entry"]["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect: Vec<(String, String)> = ["unlearn", "evaluate", "attack"]
        .iter()
        .flat_map(|k| {
            [
                (k.to_string(), "started".into()),
                (k.to_string(), "succeeded".into()),
            ]
        })
        .collect();
    assert_eq!(shape, expect);
    for r in &log {
        assert_eq!(r["user"], login.as_str(), "{r}");
        assert_eq!(r["format"], 2);
        assert!(r["uid"].is_u64(), "{r}");
        if login != "not-the-uid-account" {
            assert_eq!(r["env_user"], "not-the-uid-account", "{r}");
        }
    }
    for pair in log.chunks(2) {
        assert_eq!(pair[1]["started"], pair[0]["seq"]);
        assert_eq!(pair[0]["unfinished"], false);
    }
    let run = json(&ws.join("run/run.json"));
    assert_eq!(
        run["user"],
        format!("{login} ($USER=not-the-uid-account)").as_str()
    );

    // A long deletion, killed outright once its start is recorded.
    let mut child = command(
        &[
            "--plugins",
            &d.plugins,
            "unlearn",
            "--method",
            "org.lethe.baseline.finetune",
            "--checkpoint",
            &d.ckpt,
            "--set",
            "epochs=500",
            "--data",
            &d.data,
            "--forget",
            &d.forget,
            "--device",
            "cpu",
            "--out",
            "killed",
        ],
        ws,
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let started = std::time::Instant::now();
    let seq = loop {
        let db = rusqlite::Connection::open_with_flags(
            ws.join("audit.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let found: Option<i64> = db
            .query_row(
                "SELECT seq FROM records WHERE status = 'started' AND details LIKE '%killed%'",
                [],
                |r| r.get(0),
            )
            .ok();
        if let Some(seq) = found {
            break seq;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before it was killed"
        );
        assert!(started.elapsed().as_secs() < 120, "no start record");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();

    let listing = ok(lethe(&["audit", "log"], ws));
    let line = listing
        .lines()
        .find(|l| l.starts_with(&format!("#{seq:<5}")))
        .unwrap();
    assert!(
        line.contains("unlearn") && line.contains("UNFINISHED"),
        "{listing}"
    );
    assert!(
        listing.contains("started, never ended: the job was killed"),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("1 job(s) started and never ended: #{seq}")),
        "{listing}"
    );
    assert!(
        line.contains(&format!("{login} ($USER=not-the-uid-account)@"))
            || login == "not-the-uid-account",
        "{line}"
    );
    let log: Vec<Value> =
        serde_json::from_str(&ok(lethe(&["audit", "log", "--json"], ws))).unwrap();
    let killed = log.iter().find(|r| r["seq"] == seq).unwrap();
    assert_eq!(killed["unfinished"], true);
    assert_eq!(killed["entry"]["kind"], "unlearn");
    assert!(log.iter().all(|r| r["started"] != seq), "no end record");
    ok(lethe(&["audit", "verify"], ws));
}
