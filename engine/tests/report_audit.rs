//! `lethe report` and `lethe audit` as a user runs them, on one small deletion of
//! the bundled demo classifier (fine-tuning for two batches, a small evaluation
//! with the alignment audit, a small metric attack): every field of the compliance report in the PDF (read back with
//! pdftotext) and the HTML, byte-identical re-renders apart from the timestamp,
//! CSV/JSON/LaTeX exports, the certified PDF re-rendered from its certificate, and
//! the audit log's chain (a start and an end record per job) catching an edited
//! and a deleted record.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

mod common;

use common::{demo, plugin};

use lethe_engine::report::Format;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_lethe-cli");
const T1: i64 = 1_700_000_000;
const T2: i64 = 1_800_000_123;

fn lethe(args: &[&str], cwd: &Path) -> Output {
    Command::new(EXE)
        .args(args)
        .current_dir(cwd)
        .env_remove("LETHE_PLUGIN_PATH")
        .env_remove("LETHE_WORKSPACE")
        .env("USER", "auditor")
        .env("XDG_DATA_HOME", cwd.join("no-user-plugins"))
        .output()
        .unwrap()
}

fn ok(o: Output) -> String {
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{t}");
    t
}

/// The account name of this process's uid, as `id -un` prints it.
fn login() -> String {
    let o = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
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

/// Whether byte `i` lies in a hex string `<…>` or a literal `(D:…)`: where the PDF
/// holds its generation timestamp.
fn in_stamp(b: &[u8], i: usize) -> bool {
    let lo = i.saturating_sub(120);
    let hi = (i + 120).min(b.len());
    let open = b[lo..=i].iter().rposition(|&c| c == b'<' || c == b'(');
    let close = b[i..hi].iter().position(|&c| c == b'>' || c == b')');
    match (open, close) {
        (Some(o), Some(c)) => {
            let inner = &b[lo + o + 1..i + c];
            let hex = b[lo + o] == b'<' && inner.iter().all(u8::is_ascii_hexdigit);
            let date = b[lo + o] == b'('
                && inner.starts_with(b"D:")
                && inner[2..].iter().all(|c| c.is_ascii_digit() || *c == b'Z');
            hex || date
        }
        _ => false,
    }
}

/// The text of an HTML page: tags become spaces, entities are decoded, runs of
/// white space collapse.
fn html_text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn deletion_of(r: &lethe_engine::report::Report) -> &lethe_engine::report::DeletionReport {
    match r {
        lethe_engine::report::Report::Deletion(d) => d,
        #[allow(unreachable_patterns)]
        _ => panic!("a deletion report"),
    }
}

struct Deletion {
    dir: tempfile::TempDir,
    run: PathBuf,
}

fn deletion() -> Deletion {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    let plugins = ws.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for lib in ["lethe_baseline_finetune", "lethe_attack_metric"] {
        let src = plugin(lib);
        std::fs::copy(&src, plugins.join(src.file_name().unwrap())).unwrap();
    }
    let p = plugins.display().to_string();
    let (ckpt, data, forget) = (
        demo("classifier.safetensors"),
        demo("mnist10k.npz"),
        demo("forget.txt"),
    );
    let common = ["--data", &data, "--forget", &forget, "--device", "cpu"];
    let run = ws.join("run");
    let mut args = vec![
        "--plugins",
        &p,
        "unlearn",
        "--method",
        "org.lethe.baseline.finetune",
        "--checkpoint",
        &ckpt,
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
        &ckpt,
        "--alignment",
        "--pairs",
        "1",
        "--matrix-samples",
        "6",
        "--alignment-max",
        "60",
        "--out",
        "run/evaluation",
    ];
    args.extend(common);
    ok(lethe(&args, ws));
    let mut args = vec![
        "--plugins",
        &p,
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
    Deletion { dir, run }
}

#[test]
fn reports_hold_every_field_rerender_identically_and_the_audit_log_catches_tampering() {
    let d = deletion();
    let ws = d.dir.path();
    let run = json(&d.run.join("run.json"));
    let eval = json(&d.run.join("evaluation/evaluation.json"));
    let attack = json(&d.run.join("attack-metric/attack.json"));
    // Who ran it: the uid's account, with `$USER` beside it when it differs.
    let login = login();
    let who = if login == "auditor" {
        login.clone()
    } else {
        format!("{login} ($USER=auditor)")
    };
    assert_eq!(run["user"], who.as_str());
    assert_eq!(run["forget"]["samples"], 300);
    assert_eq!(run["params"]["max_batches"], 2, "{}", run["params"]);
    // One seed: `--seed 3` also seeded the method's own generator.
    assert_eq!(run["params"]["seed"], 3, "{}", run["params"]);
    assert_eq!(run["params_given"]["seed"], 3, "{}", run["params_given"]);
    assert_eq!(
        run["unlearned"]["sha256"], eval["checkpoint_sha256"],
        "the evaluation is of the unlearned model"
    );

    // One export through the CLI (recorded in the audit log), the others through
    // the library API the app uses.
    let said = ok(lethe(
        &[
            "report",
            d.run.to_str().unwrap(),
            "--timestamp",
            &T1.to_string(),
            "--out",
            "a.pdf",
        ],
        ws,
    ));
    assert!(said.contains("a.pdf: "), "{said}");
    let src = lethe_engine::report::DeletionSources {
        run: d.run.clone(),
        ..Default::default()
    };
    let r = lethe_engine::report::Report::deletion(&src).unwrap();
    let render = |f: Format, t: i64| lethe_engine::report::render(&r, f, t).unwrap();
    // The CLI's report is certified: the same results, time and certificate give
    // the same bytes.
    let signed = lethe_engine::report::certificate::read(&ws.join("a.pdf.cert.json")).unwrap();
    let certified = lethe_engine::report::Certified {
        signed: &signed,
        file_name: "a.pdf.cert.json",
    };
    let b = lethe_engine::report::render_with(&r, Format::Pdf, T1, Some(certified)).unwrap();
    let a = std::fs::read(ws.join("a.pdf")).unwrap();
    assert!(a.starts_with(b"%PDF-"));
    assert_eq!(
        a, b,
        "the same results, time and certificate give the same bytes"
    );
    // Without a certificate, another time changes only the stamp.
    std::fs::write(ws.join("u.pdf"), render(Format::Pdf, T1)).unwrap();
    std::fs::write(ws.join("c.pdf"), render(Format::Pdf, T2)).unwrap();
    let (a, c) = (
        std::fs::read(ws.join("u.pdf")).unwrap(),
        std::fs::read(ws.join("c.pdf")).unwrap(),
    );
    assert_eq!(a.len(), c.len(), "another time changes only the stamp");
    let diffs: Vec<usize> = (0..a.len()).filter(|&i| a[i] != c[i]).collect();
    assert!(!diffs.is_empty());
    for &i in &diffs {
        assert!(
            in_stamp(&a, i) && in_stamp(&c, i),
            "byte {i} differs outside the timestamp: {:?}",
            String::from_utf8_lossy(&a[i.saturating_sub(40)..(i + 40).min(a.len())])
        );
    }
    // The fonts are embedded, so the text reads back.
    let text_u = pdftotext(&ws.join("u.pdf"));
    let text_c = pdftotext(&ws.join("c.pdf"));
    assert!(text_u.contains("2023-11-14 22:13:20 UTC"), "{text_u}");
    assert_eq!(
        text_u.replace("2023-11-14 22:13:20 UTC", "T"),
        text_c.replace("2027-01-15 08:02:03 UTC", "T")
    );
    let text = pdftotext(&ws.join("a.pdf"));
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let s = |v: &Value| v.as_str().unwrap().to_string();
    let mut fields = vec![
        "Lethe deletion report".to_string(),
        format!("Run by {who}"),
        "Started".into(),
        "Forget-set source file".into(),
        s(&run["forget"]["list"]["sha256"]),
        "Samples requested 300".into(),
        "Matched 300 training samples".into(),
        "Unmatched 0".into(),
        s(&run["data"]["sha256"]),
        s(&run["original"]["sha256"]),
        s(&run["unlearned"]["sha256"]),
        "org.lethe.baseline.finetune".into(),
        format!("Plugin version {}", s(&run["method"]["version"])),
        s(&run["method"]["library"]["sha256"]),
        "max_batches 2".into(),
        "Seed 3".into(),
        "Device cpu".into(),
        s(&run["software"]["libtorch"]),
        "retain accuracy (RA)".into(),
        "test accuracy (TA)".into(),
        "forget accuracy (UA)".into(),
        "Forgetting score FS".into(),
        "TPR @ 1% FPR".into(),
        "TPR @ 0.1% FPR".into(),
        "forget-set AUC".into(),
        format!(
            "{:.4} [{:.4},",
            attack["metrics"]["forget"]["auc"].as_f64().unwrap(),
            attack["metrics"]["forget"]["auc_ci"]["low"]
                .as_f64()
                .unwrap()
        ),
        "AM before".into(),
        "AGM = before − after".into(),
        "false-positive rate (log)".into(),
        "Verdict and the rules behind it".into(),
        "exact retraining is the reference".into(),
        "TA may fall at most 3 points below the original's".into(),
        "lethe --plugins".into(),
        "unlearn --method org.lethe.baseline.finetune".into(),
        "lethe evaluate --checkpoint".into(),
        "attack --attack org.lethe.attack.metric-mia".into(),
    ];
    let del = deletion_of(&r);
    let verdict = del.verdict.outcome.label();
    fields.push(format!("{verdict} {}", del.verdict.headline));
    for f in &fields {
        assert!(flat.contains(f.as_str()), "the PDF lacks {f:?}:\n{text}");
    }
    assert!(flat.contains("page 2 of"), "several pages");

    // HTML: self-contained, the same fields, identical apart from the stamp.
    std::fs::write(ws.join("a.html"), render(Format::Html, T1)).unwrap();
    std::fs::write(ws.join("c.html"), render(Format::Html, T2)).unwrap();
    let h1 = std::fs::read_to_string(ws.join("a.html")).unwrap();
    let h2 = std::fs::read_to_string(ws.join("c.html")).unwrap();
    assert_eq!(
        h1.replace("2023-11-14 22:13:20 UTC", "T"),
        h2.replace("2027-01-15 08:02:03 UTC", "T")
    );
    assert!(!h1.contains("src=\"http") && !h1.contains("href=\"http") && !h1.contains("<link"));
    assert!(h1.matches("<svg").count() >= 5, "2 ROC plots + 3 heatmaps");
    let html_flat = html_text(&h1);
    for f in &fields {
        assert!(
            html_flat.contains(f.as_str()),
            "the HTML lacks {f:?}:\n{html_flat}"
        );
    }

    // CSV, JSON and LaTeX carry the same values.
    for (f, name) in [
        (Format::Csv, "r.csv"),
        (Format::Json, "r.json"),
        (Format::Tex, "r.tex"),
    ] {
        std::fs::write(ws.join(name), render(f, T1)).unwrap();
    }
    let csv = std::fs::read_to_string(ws.join("r.csv")).unwrap();
    assert!(csv.starts_with("section,table,row,column,value\n"));
    assert!(csv.contains(&format!(
        "Deletion request,request,Forget-set SHA-256,value,{}",
        s(&run["forget"]["list"]["sha256"])
    )));
    let j = json(&ws.join("r.json"));
    assert_eq!(j["kind"], "deletion");
    assert_eq!(j["generated"], "2023-11-14 22:13:20 UTC");
    assert_eq!(j["verdict"]["outcome"], verdict.to_lowercase());
    assert_eq!(j["run"]["params"], run["params"]);
    assert_eq!(
        j["attacks"][0]["attack"]["id"],
        "org.lethe.attack.metric-mia"
    );
    assert_eq!(j["integrity"]["unlearned"], true);
    let tex = std::fs::read_to_string(ws.join("r.tex")).unwrap();
    assert!(tex.contains("\\begin{tabular}") && tex.contains("TPR @ 1\\% FPR"));
    // Existing reports are never written over.
    let again = lethe(&["report", "run", "--out", "a.pdf"], ws);
    assert!(!again.status.success());

    // The audit log: every job and export, chained.
    let v = ok(lethe(&["audit", "verify"], ws));
    assert!(v.contains("chain intact"), "{v}");
    let log = ok(lethe(&["audit", "log", "--json"], ws));
    let records: Vec<Value> = serde_json::from_str(&log).unwrap();
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["entry"]["kind"].as_str().unwrap())
        .collect();
    // Each job recorded when it started and when it ended.
    assert_eq!(
        kinds,
        [
            "unlearn", "unlearn", "evaluate", "evaluate", "attack", "attack", "report", "report"
        ]
    );
    for pair in records.chunks(2) {
        assert_eq!(pair[0]["entry"]["status"], "started");
        assert_eq!(pair[1]["entry"]["status"], "succeeded");
        assert_eq!(pair[1]["started"], pair[0]["seq"]);
    }
    let exported = &records[7]["entry"]["outputs"][0];
    assert_eq!(exported["role"], "report");
    assert_eq!(exported["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(records[7]["entry"]["outputs"][1]["role"], "certificate");
    let unlearn = &records[1]["entry"];
    assert_eq!(
        unlearn["plugin"]["sha256"],
        run["method"]["library"]["sha256"]
    );
    let model_out = unlearn["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["role"] == "model.safetensors")
        .unwrap();
    assert_eq!(model_out["sha256"], run["unlearned"]["sha256"]);
    assert_eq!(records[0]["user"], login.as_str());
    assert_eq!(records[1]["prev_hash"], records[0]["hash"]);

    let db = rusqlite::Connection::open(ws.join("audit.sqlite")).unwrap();
    assert!(
        db.execute("UPDATE records SET status = 'x' WHERE seq = 2", [])
            .is_err(),
        "the log refuses edits"
    );
    db.execute_batch(
        "DROP TRIGGER records_append_only_update; DROP TRIGGER records_append_only_delete;",
    )
    .unwrap();
    // Record #4 is the evaluation's end.
    db.execute(
        "UPDATE records SET outputs = replace(outputs, 'evaluation.json', 'evaluation.jsom') WHERE seq = 4",
        [],
    )
    .unwrap();
    let bad = lethe(&["audit", "verify"], ws);
    assert!(!bad.status.success());
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(
        out.contains("record #4") && out.contains("changed"),
        "{out}"
    );
    assert!(!out.contains("record #5"), "{out}");

    // Deleting a record is caught too (after undoing the edit).
    db.execute(
        "UPDATE records SET outputs = replace(outputs, 'evaluation.jsom', 'evaluation.json') WHERE seq = 4",
        [],
    )
    .unwrap();
    ok(lethe(&["audit", "verify"], ws));
    db.execute("DELETE FROM records WHERE seq = 3", []).unwrap();
    let bad = lethe(&["audit", "verify"], ws);
    assert!(!bad.status.success());
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(out.contains("record #3 is missing"), "{out}");
}

#[test]
fn a_folder_that_is_no_run_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let o = lethe(&["report", "."], dir.path());
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a deletion run folder"), "{err}");
    let o = lethe(&["audit", "verify"], dir.path());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no audit log here"));
}

/// A GUI run folder (`job.json` + `output/`): the report is rebuilt from the
/// job's settings with hashes taken now; with no evaluation or attack of its
/// model the verdict is inconclusive and says why; an evaluation of another
/// model is listed as not used.
#[test]
fn a_gui_run_folder_reports_without_results_and_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("runs/r1");
    std::fs::create_dir_all(run.join("output")).unwrap();
    std::fs::create_dir_all(run.join("evaluation-1")).unwrap();
    let model = run.join("output/model.safetensors");
    std::fs::copy(demo("classifier.safetensors"), &model).unwrap();
    let job = serde_json::json!({
        "id": "r1",
        "spec": {
            "kind": "method",
            "plugin_id": "org.lethe.baseline.finetune",
            "plugin_name": "Fine-tune",
            "library": plugin("lethe_baseline_finetune"),
            "params": {"epochs": 2, "lr": 0.01},
            "checkpoint": demo("classifier.safetensors"),
            "data": demo("mnist10k.npz"),
            "forget": demo("forget.txt"),
            "forget_label": "forget.txt (300)",
            "device": "cpu",
            "seed": 7
        },
        "status": {"state": "succeeded"},
        "created": 100.0,
        "started": 100.0,
        "finished": 160.5
    });
    std::fs::write(run.join("job.json"), job.to_string()).unwrap();
    let other = serde_json::json!({
        "checkpoint": "/elsewhere/model.safetensors",
        "checkpoint_sha256": "0".repeat(64),
        "seed": 0,
        "device": "Cpu",
        "utility": {
            "reader": "classifier",
            "retain": {"samples": 1, "accuracy": 1.0, "loss": 0.0},
            "test": {"samples": 1, "accuracy": 1.0, "loss": 0.0},
            "forget": {"samples": 1, "accuracy": 1.0, "loss": 0.0}
        }
    });
    std::fs::write(run.join("evaluation-1/evaluation.json"), other.to_string()).unwrap();

    let src = lethe_engine::report::DeletionSources {
        run: run.clone(),
        ..Default::default()
    };
    let r = lethe_engine::report::Report::deletion(&src).unwrap();
    let d = deletion_of(&r);
    assert_eq!(d.verdict.outcome.label(), "INCONCLUSIVE");
    assert!(
        d.verdict.headline.contains("no attack"),
        "{}",
        d.verdict.headline
    );
    assert_eq!(d.run.seed, 7);
    assert_eq!(d.run.seconds, 60.5);
    assert_eq!(
        d.run.unlearned.as_ref().unwrap().sha256,
        d.run.original.sha256,
        "the copied model hashes as the original file"
    );
    assert_eq!(d.integrity.unlearned, Some(true));
    assert_eq!(d.ignored.len(), 1, "{:?}", d.ignored);
    let html =
        String::from_utf8(lethe_engine::report::render(&r, Format::Html, T1).unwrap()).unwrap();
    let text = html_text(&html);
    for want in [
        "not recorded (GUI run)",
        "No evaluation of the unlearned model was found",
        "No attack results were found",
        "Not used:",
        "Seed 7",
        "epochs 2",
        "lr 0.01",
    ] {
        assert!(text.contains(want), "missing {want:?}:\n{text}");
    }
    let pdf = lethe_engine::report::render(&r, Format::Pdf, T1).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    assert!(String::from_utf8_lossy(&pdf).trim_end().ends_with("%%EOF"));
}
