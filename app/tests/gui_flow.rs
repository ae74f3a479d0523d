//! The GUI driven headless (egui_kittest, no display): a compliance officer's
//! deletion from the first-start demo offer to a finished run that is still
//! there after a restart; a crashing plugin; cancel; making a forget set; and
//! every view drawn once (which also proves every glyph used has a font).
//! Jobs run in real `lethe worker` processes on the bundled demo, with the
//! test-fixture plugins.
// Test helpers (not #[test] fns, so clippy's test exemption misses them) unwrap freely.
#![allow(clippy::unwrap_used)]

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use lethe_app::app::{Command, Config, LetheApp};
use lethe_app::form::FormValue;
use lethe_app::jobs::JobStatus;
use lethe_app::state::{AppState, ForgetMode, View};
use lethe_app::tasks::Loadable;
use lethe_engine::worker::WorkerOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `lib<name>.so` built next to this test binary (deps/) or one level up.
fn fixture(name: &str) -> PathBuf {
    let file = format!("lib{name}.so");
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        let p = dir.join(&file);
        if p.exists() {
            return p;
        }
    }
    panic!("{file} not found next to {}", exe.display());
}

/// A plugin folder holding only the test fixtures.
fn plugin_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture("lethe_test_fixtures"),
        dir.join("liblethe_test_fixtures.so"),
    )
    .unwrap();
    dir
}

fn config(tmp: &Path) -> Config {
    let mut worker = WorkerOptions::with_exe(env!("CARGO_BIN_EXE_lethe"));
    worker.grace = Duration::from_secs(2);
    Config {
        worker,
        extra_plugin_dirs: vec![plugin_dir(tmp)],
        demo_dir: tmp.join("Demo"),
        waker: Arc::new(|| {}),
    }
}

fn harness(app: LetheApp) -> Harness<'static, LetheApp> {
    Harness::builder()
        // Tall enough that every step of the deletion request is on screen
        // (clicks go to where a widget is drawn).
        .with_size(egui::vec2(1280.0, 2400.0))
        .build_ui_state(|ui, app: &mut LetheApp| app.draw(ui), app)
}

/// Steps frames until `cond` holds.
fn step_until(
    h: &mut Harness<'_, LetheApp>,
    what: &str,
    secs: u64,
    cond: impl Fn(&LetheApp) -> bool,
) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !cond(h.state()) {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        h.step();
        std::thread::sleep(Duration::from_millis(30));
    }
    h.step();
}

fn last_run(app: &LetheApp) -> Option<&lethe_app::jobs::JobRecord> {
    app.project.as_ref().and_then(|p| p.runs.last())
}

/// Opens the demo through the first-start offer and waits for the plugins.
fn open_demo(h: &mut Harness<'_, LetheApp>) {
    h.step();
    assert!(!h.state().state.welcomed);
    h.get_by_label("▶  Open the demo project").click();
    h.step();
    h.step();
    step_until(h, "the plugin scan", 120, |a| a.catalog.ready().is_some());
    let app = h.state();
    assert_eq!(
        app.state.view,
        View::Deletion,
        "the demo opens on the deletion request"
    );
    assert!(app.state.welcomed);
    let d = &app.state.draft;
    assert!(d.checkpoint.is_some() && d.data.is_some() && d.forget.is_some());
}

/// Clicks "Start deletion" once the model and data inspections have landed:
/// a click goes where the button was drawn, and a late inspection moves it.
fn click_start(h: &mut Harness<'_, LetheApp>) {
    step_until(h, "the model and data inspections", 120, |a| {
        let d = &a.state.draft;
        let ckpt = d
            .checkpoint
            .as_ref()
            .and_then(|c| a.checkpoints.get(c))
            .is_some_and(|l| !matches!(l, lethe_app::tasks::Loadable::Loading));
        let data = d
            .data
            .as_ref()
            .and_then(|p| a.datasets.get(&(p.clone(), d.seed)))
            .is_some_and(|l| !matches!(l, lethe_app::tasks::Loadable::Loading));
        ckpt && data
    });
    h.step();
    h.get_by_label("▶  Start deletion").click();
}

/// Opens the forget-set form on "every training sample of `class`" and waits
/// for its preview.
fn preview_class(h: &mut Harness<'_, LetheApp>, class: i64) {
    {
        let app = h.state_mut();
        app.state.forget_draft.mode = ForgetMode::Class;
        app.state.forget_draft.class = class;
        app.state.draft.forget_form_open = true;
    }
    step_until(
        h,
        "the preview",
        60,
        |a| matches!(&a.forget_preview, Some((r, lethe_app::tasks::Loadable::Ready(_))) if r.class == class),
    );
}

/// Waits until the chosen checkpoint has been read.
fn wait_for_model(h: &mut Harness<'_, LetheApp>, what: &str) {
    step_until(h, what, 120, |a| {
        matches!(
            a.state
                .draft
                .checkpoint
                .as_ref()
                .and_then(|c| a.checkpoints.get(c)),
            Some(lethe_app::tasks::Loadable::Ready(_))
        )
    });
}

fn choose_method(h: &mut Harness<'_, LetheApp>, id: &str, values: &[(&str, FormValue)]) {
    let app = h.state_mut();
    app.state.draft.method = Some(id.to_string());
    let form = app.state.forms.entry(id.to_string()).or_default();
    for (k, v) in values {
        form.values.insert((*k).to_string(), v.clone());
    }
    h.step();
    h.step();
}

#[test]
fn deletion_from_the_demo_offer_to_a_finished_run_that_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = harness(LetheApp::new(AppState::default(), config(tmp.path())));
    open_demo(&mut h);
    choose_method(
        &mut h,
        "org.lethe.test.progress",
        &[("steps", FormValue::Int(6))],
    );
    step_until(&mut h, "the checkpoint inspection", 60, |a| {
        a.state
            .draft
            .checkpoint
            .as_ref()
            .and_then(|c| a.checkpoints.get(c))
            .and_then(|l| l.ready())
            .is_some()
    });
    click_start(&mut h);
    step_until(&mut h, "the job to start", 30, |a| last_run(a).is_some());
    let id = last_run(h.state()).unwrap().id.clone();
    assert_eq!(
        h.state().state.view,
        View::Run(id.clone()),
        "the run is shown"
    );
    step_until(&mut h, "the job to finish", 180, |a| {
        last_run(a).is_some_and(|r| r.status.is_final())
    });
    let run = last_run(h.state()).unwrap().clone();
    assert_eq!(
        run.status,
        JobStatus::Succeeded,
        "{:?}\n{}",
        run.status,
        run.stderr_tail
    );
    assert_eq!(run.curves["loss"].len(), 6, "one loss point per step");
    assert_eq!(run.fraction, Some(1.0));
    assert!(
        run.log.iter().any(|l| l.text.contains("running on")),
        "{:?}",
        run.log
    );
    assert!(h.query_by_label("DONE").is_some(), "the status is shown");
    let record_file = tmp.path().join("Demo/runs").join(&id).join("job.json");
    assert!(record_file.is_file());

    // Restart: the persisted state reopens the project, the view and the run.
    let saved = serde_json::to_string(&h.state().state).unwrap();
    drop(h);
    let state: AppState = serde_json::from_str(&saved).unwrap();
    let mut h = harness(LetheApp::new(state, config(tmp.path())));
    h.step();
    let app = h.state();
    assert_eq!(app.state.view, View::Run(id.clone()));
    let again = app.project.as_ref().unwrap().run(&id).unwrap();
    assert_eq!(again.status, JobStatus::Succeeded);
    assert_eq!(again.curves, run.curves);
    assert!(
        h.query_by_label("Progress test").is_some(),
        "the run view shows it"
    );

    // "Change the request" brings the run's request back to the deletion page.
    step_until(&mut h, "the plugin scan", 120, |a| {
        a.catalog.ready().is_some()
    });
    h.state_mut().state.draft = Default::default();
    h.state_mut().state.forms.clear();
    h.get_by_label("✏ Change the request").click();
    h.step();
    h.step();
    let app = h.state();
    assert_eq!(app.state.view, View::Deletion);
    let d = &app.state.draft;
    assert_eq!(d.method.as_deref(), Some("org.lethe.test.progress"));
    assert_eq!(d.checkpoint.as_ref(), Some(&run.spec.checkpoint));
    assert_eq!(d.forget.as_ref(), Some(&run.spec.forget));
    assert_eq!(
        app.state.forms["org.lethe.test.progress"].values["steps"],
        FormValue::Int(6)
    );
}

#[test]
fn a_crashing_plugin_is_reported_and_the_app_keeps_running_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = harness(LetheApp::new(AppState::default(), config(tmp.path())));
    open_demo(&mut h);
    choose_method(
        &mut h,
        "org.lethe.test.misbehave",
        &[("how", FormValue::Choice("segfault".into()))],
    );
    click_start(&mut h);
    step_until(&mut h, "the crash", 120, |a| {
        last_run(a).is_some_and(|r| r.status.is_final())
    });
    let run = last_run(h.state()).unwrap().clone();
    let problem = run.status.problem().unwrap_or_default();
    assert!(
        matches!(run.status, JobStatus::Crashed { .. }) && problem.contains("SIGSEGV"),
        "{:?}",
        run.status
    );
    assert!(h.query_by_label("The job did not finish").is_some());
    // Still working: the same request with a well-behaved plugin succeeds.
    h.state_mut().commands.push(Command::Show(View::Deletion));
    h.step();
    choose_method(
        &mut h,
        "org.lethe.test.progress",
        &[("steps", FormValue::Int(2))],
    );
    click_start(&mut h);
    step_until(&mut h, "the second job", 120, |a| {
        a.project.as_ref().unwrap().runs.len() == 2
            && last_run(a).is_some_and(|r| r.status.is_final())
    });
    assert_eq!(last_run(h.state()).unwrap().status, JobStatus::Succeeded);
}

#[test]
fn cancel_stops_a_running_job() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = harness(LetheApp::new(AppState::default(), config(tmp.path())));
    open_demo(&mut h);
    choose_method(
        &mut h,
        "org.lethe.test.misbehave",
        &[
            ("how", FormValue::Choice("slow".into())),
            ("steps", FormValue::Int(1000)),
        ],
    );
    click_start(&mut h);
    step_until(&mut h, "progress", 120, |a| {
        last_run(a).is_some_and(|r| r.fraction.is_some_and(|f| f > 0.0))
    });
    let r = last_run(h.state()).unwrap();
    assert_eq!(r.status, JobStatus::Running);
    // The record on disk follows the run (every few seconds), so a crash of the
    // app itself keeps what was seen.
    let file = tmp.path().join("Demo/runs").join(&r.id).join("job.json");
    step_until(&mut h, "the record on disk to show progress", 90, |_| {
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str::<lethe_app::jobs::JobRecord>(&t).ok())
            .is_some_and(|rec| rec.fraction.is_some_and(|f| f > 0.0))
    });
    let r = last_run(h.state()).unwrap();
    assert!(
        r.eta(lethe_app::project::now()).is_some(),
        "an ETA once progress moves"
    );
    h.get_by_label("⏹ Cancel").click();
    step_until(&mut h, "the cancel", 90, |a| {
        last_run(a).is_some_and(|r| r.status.is_final())
    });
    let r = last_run(h.state()).unwrap();
    assert_eq!(r.status, JobStatus::Cancelled { killed: false });
    assert!(
        r.fraction.unwrap() < 0.5,
        "it stopped early: {:?}",
        r.fraction
    );
}

/// Closing the window while a job runs: the job is stopped, the window says
/// what it is finishing, and it closes only once the job's end is in the
/// project's audit log; shutting down then joins every background task.
#[test]
fn closing_stops_the_running_job_and_waits_for_its_audit_record() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = harness(LetheApp::new(AppState::default(), config(tmp.path())));
    open_demo(&mut h);
    choose_method(
        &mut h,
        "org.lethe.test.misbehave",
        &[
            // Ignores the cancel: the worker is killed after the grace period
            // (2 s here), so closing has to wait for it.
            ("how", FormValue::Choice("hang".into())),
        ],
    );
    click_start(&mut h);
    step_until(&mut h, "the plugin to run", 120, |a| {
        last_run(a).is_some_and(|r| r.log.iter().any(|l| l.text.contains("misbehaving")))
    });
    let id = last_run(h.state()).unwrap().id.clone();

    h.state_mut().begin_close();
    assert!(!h.state().ready_to_close(), "the worker is still stopping");
    assert!(
        h.state()
            .finishing()
            .iter()
            .any(|w| w.contains("stopping the job Misbehaviour test")),
        "{:?}",
        h.state().finishing()
    );
    // Queued work no longer starts and the window waits, saying for what.
    std::thread::sleep(lethe_app::tasks::FINISHING_NOTICE_AFTER);
    // A new window area is laid out on its first frame and shown on the next.
    h.step();
    h.step();
    assert!(!h.state().ready_to_close());
    assert!(
        h.query_by_label("Finishing…").is_some(),
        "the window says what it waits for"
    );
    step_until(&mut h, "closing to be ready", 60, |a| a.ready_to_close());
    let r = h
        .state()
        .project
        .as_ref()
        .unwrap()
        .run(&id)
        .unwrap()
        .clone();
    assert_eq!(r.status, JobStatus::Cancelled { killed: true });

    // What the window's close does last (eframe's on_exit), then the check that
    // nothing was lost: the cancelled job is in the audit log.
    h.state_mut().shutdown();
    assert_unlearn_audited(tmp.path(), "misbehave");
}

/// The demo project's audit log holds an `unlearn` record whose subject names
/// `plugin`, and its chain verifies.
fn assert_unlearn_audited(tmp: &Path, plugin: &str) {
    let log = lethe_engine::audit::AuditLog::open_existing(
        &tmp.join("Demo").join(lethe_engine::audit::AUDIT_FILE),
    )
    .unwrap();
    let records = log.records().unwrap();
    assert!(
        records
            .iter()
            .any(|r| r.entry.kind == "unlearn" && r.entry.subject.contains(plugin)),
        "{:?}",
        records
            .iter()
            .map(|r| (&r.entry.kind, &r.entry.subject))
            .collect::<Vec<_>>()
    );
    assert!(log.verify(None).unwrap().ok());
}

/// The app shut down with no close request first (eframe's on_exit alone, or
/// the app dropped) while a job is in flight: the job is stopped, and its end
/// is in the audit log by the time shutdown returns.
#[test]
fn shutdown_with_a_job_in_flight_records_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = harness(LetheApp::new(AppState::default(), config(tmp.path())));
    open_demo(&mut h);
    choose_method(
        &mut h,
        "org.lethe.test.progress",
        &[("steps", FormValue::Int(50))],
    );
    click_start(&mut h);
    step_until(&mut h, "the job to start", 60, |a| {
        last_run(a).is_some_and(|r| r.status == JobStatus::Running)
    });
    let mut app = h.into_state();
    app.shutdown();
    assert_unlearn_audited(tmp.path(), "test.progress");
}

/// A method that does not fit the model or the forget set (it declares
/// classifiers and whole classes only) says why on the page and cannot start; a
/// whole class makes it fit and its run succeeds; the encoder does not fit it.
#[test]
fn a_method_that_does_not_fit_says_why_and_cannot_start() {
    use lethe_app::panels::deletion::{job_spec, method_refusal};
    let tmp = tempfile::tempdir().unwrap();
    let mut h = harness(LetheApp::new(AppState::default(), config(tmp.path())));
    open_demo(&mut h);
    choose_method(&mut h, "org.lethe.test.classwise", &[]);
    wait_for_model(&mut h, "the model inspection");
    let why = |a: &LetheApp| {
        let cat = a.catalog.ready().unwrap();
        method_refusal(a, &cat.get("org.lethe.test.classwise").unwrap().info)
    };
    // The demo's forget set is 5 % of the digits at random.
    assert_eq!(
        why(h.state()).as_deref(),
        Some(
            "forgets whole classes only; this forget set leaves other training samples of its classes"
        )
    );
    let missing = job_spec(h.state()).unwrap_err();
    assert!(
        missing
            .iter()
            .any(|m| m
                .starts_with("Class-wise test does not apply here: it forgets whole classes only")),
        "{missing:?}"
    );
    assert!(
        h.query_all_by_label_contains("Class-wise test does not apply here")
            .count()
            == 2,
        "the reason is on the page, under the method and in what is missing"
    );

    // A whole class: it fits, and the run the engine starts succeeds.
    preview_class(&mut h, 3);
    h.get_by_label("Save this forget set").click();
    h.step();
    h.step();
    let saved = h
        .state()
        .project
        .as_ref()
        .unwrap()
        .file
        .forget_sets
        .last()
        .unwrap()
        .clone();
    assert_eq!(saved.whole_classes, Some(true));
    assert_eq!(why(h.state()), None);
    // One Seed: the request's fills the method's own, whose field is not shown.
    h.state_mut().state.draft.seed = 7;
    h.step();
    assert_eq!(job_spec(h.state()).unwrap().params["seed"], 7);
    assert!(h.query_by_label("Seed:").is_some() && h.query_by_label("Seed").is_none());
    // A study's rows fill it with their own seeds: the form's value is not kept.
    {
        let app = h.state_mut();
        let d = &mut app.state.study_draft;
        d.name = "seeds".into();
        d.checkpoint = app.state.draft.checkpoint.clone();
        d.data = app.state.draft.data.clone();
        d.forget = Some(saved.path.clone());
        d.seeds = "1, 2".into();
        // The catalog here holds the test fixtures only.
        d.retrain_id = "org.lethe.test.classwise".into();
        d.methods = vec![lethe_app::study::DraftMethod {
            name: "CW".into(),
            id: "org.lethe.test.classwise".into(),
        }];
    }
    let study = lethe_app::panels::study::spec_of(h.state(), &h.state().state.study_draft)
        .unwrap_or_else(|m| panic!("{m:?}"));
    assert_eq!(study.methods[0].params.get("seed"), None);
    assert_eq!(study.retrain.params.get("seed"), None);
    click_start(&mut h);
    step_until(&mut h, "the run", 120, |a| {
        last_run(a).is_some_and(|r| r.status.is_final())
    });
    let r = last_run(h.state()).unwrap();
    assert_eq!(r.status, JobStatus::Succeeded, "{}", r.stderr_tail);

    // The encoder has no class logits.
    let encoder = h.state().project.as_ref().unwrap().file.checkpoints[1].clone();
    h.state_mut().state.draft.checkpoint = Some(encoder);
    h.state_mut().state.view = View::Deletion;
    wait_for_model(&mut h, "the encoder's inspection");
    assert_eq!(
        why(h.state()).as_deref(),
        Some("needs a classifier; this model is an encoder")
    );
}

#[test]
fn a_class_forget_set_is_previewed_saved_and_selected() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = harness(LetheApp::new(AppState::default(), config(tmp.path())));
    open_demo(&mut h);
    preview_class(&mut h, 3);
    let n = match &h.state().forget_preview {
        Some((_, lethe_app::tasks::Loadable::Ready(p))) => p.indices.len(),
        _ => unreachable!(),
    };
    // The demo opens on the leaky demo's data: 2,000 training digits.
    assert!(
        n > 150 && n < 260,
        "about a tenth of 2,000 training digits: {n}"
    );
    h.get_by_label("Save this forget set").click();
    h.step();
    h.step();
    let app = h.state();
    let p = app.project.as_ref().unwrap();
    assert_eq!(
        p.file.forget_sets.len(),
        3,
        "the demo's two and the new one"
    );
    let saved = &p.file.forget_sets[2];
    assert_eq!(saved.count, n);
    assert_eq!(
        app.state.draft.forget.as_ref(),
        Some(&saved.path),
        "and selected"
    );
    let text = std::fs::read_to_string(&saved.path).unwrap();
    assert!(text.starts_with("# forget set"), "{text}");
    assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), n);
    // The worker accepts the list: the engine validates it against the same split.
    let data = lethe_engine::data::load(&saved.data).unwrap();
    let split = lethe_engine::jobs::train::split_of(&data, 0).unwrap();
    let set = lethe_engine::data::ForgetSet::from_list_file(&saved.path, data.len(), &split.train)
        .unwrap();
    assert_eq!(set.len(), n);
}

#[test]
fn every_view_draws() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = harness(LetheApp::new(AppState::default(), config(tmp.path())));
    open_demo(&mut h);
    // A finished run with a matrix and score files, as an attack would leave them.
    let (ckpt, data, forget) = {
        let d = &h.state().state.draft;
        (
            d.checkpoint.clone().unwrap(),
            d.data.clone().unwrap(),
            d.forget.clone().unwrap(),
        )
    };
    choose_method(
        &mut h,
        "org.lethe.test.progress",
        &[("steps", FormValue::Int(2))],
    );
    click_start(&mut h);
    step_until(&mut h, "the run", 120, |a| {
        last_run(a).is_some_and(|r| r.status.is_final())
    });
    let run = last_run(h.state()).unwrap().id.clone();
    let out = tmp.path().join("Demo/runs").join(&run).join("output");
    std::fs::create_dir_all(&out).unwrap();
    let meta = lethe_engine::checkpoint::CheckpointMeta::new(None, None);
    let matrix = tch::Tensor::rand([300, 300], (tch::Kind::Float, tch::Device::Cpu));
    let m_path = out.join("alignment_gap.safetensors");
    lethe_engine::checkpoint::save_tensors(
        &m_path,
        &[("alignment_gap".into(), matrix)],
        &meta,
        false,
    )
    .unwrap();
    // The evaluation's alignment file: AM before/after, AGM, and the samples.
    let first8: Vec<i64> = lethe_app::panels::read_indices(&forget).unwrap()[..8].to_vec();
    let am = |shift: f64| tch::Tensor::eye(8, (tch::Kind::Double, tch::Device::Cpu)) * shift + 0.1;
    let a_path = out.join("alignment.safetensors");
    lethe_engine::checkpoint::save_tensors(
        &a_path,
        &[
            ("am_before".into(), am(0.8)),
            ("am_after".into(), am(0.3)),
            ("agm".into(), am(0.8) - am(0.3)),
            ("heatmap_indices".into(), tch::Tensor::from_slice(&first8)),
        ],
        &meta,
        false,
    )
    .unwrap();
    for (role, n) in [("member", 200), ("nonmember", 200), ("forget", 300)] {
        let t = tch::Tensor::rand([n], (tch::Kind::Double, tch::Device::Cpu));
        let name = format!("scores_{role}");
        lethe_engine::checkpoint::save_tensors(
            &out.join(format!("{name}.safetensors")),
            &[(name, t)],
            &meta,
            false,
        )
        .unwrap();
    }
    let views = [
        View::Home,
        View::Deletion,
        View::Checkpoint(ckpt),
        View::Dataset(data),
        View::ForgetSet(forget),
        View::Plugins,
        View::Runtime,
        View::Run(run.clone()),
        View::Artifact {
            run: run.clone(),
            path: m_path.clone(),
        },
        View::Artifact {
            run: run.clone(),
            path: a_path.clone(),
        },
        View::Artifact {
            run: run.clone(),
            path: out.join("scores_forget.safetensors"),
        },
    ];
    for view in views {
        h.state_mut().state.view = view.clone();
        // A few frames: background loads land and are drawn too.
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            h.step();
            std::thread::sleep(Duration::from_millis(20));
            let a = h.state();
            let loading = a
                .artifacts
                .values()
                .any(|l| matches!(l, lethe_app::tasks::Loadable::Loading))
                || a.scores
                    .values()
                    .any(|l| matches!(l, lethe_app::tasks::Loadable::Loading))
                || a.checkpoints
                    .values()
                    .any(|l| matches!(l, lethe_app::tasks::Loadable::Loading))
                || a.datasets
                    .values()
                    .any(|l| matches!(l, lethe_app::tasks::Loadable::Loading));
            if !loading {
                break;
            }
        }
        h.step();
        assert_eq!(h.state().state.view, view);
    }
    // The matrix became a heatmap of the right size; the scores ROC curves.
    let app = h.state();
    let hm = app
        .heatmaps
        .get(&(m_path, "alignment_gap".to_string()))
        .unwrap();
    assert_eq!((hm.matrix().rows, hm.matrix().cols), (300, 300));
    let scores = app.scores.get(&out).and_then(|l| l.ready()).unwrap();
    assert_eq!(lethe_app::artifacts::rocs(scores).len(), 2);
    // The alignment file opens as before / after / gap, with the samples'
    // pictures on both axes once they are loaded.
    let gap = app
        .heatmaps
        .get(&(a_path.clone(), "triple/agm".to_string()))
        .unwrap();
    assert_eq!(
        gap.colormap(),
        lethe_app::widgets::heatmap::Colormap::Diverging
    );
    assert_eq!(
        gap.row_labels.as_ref().unwrap()[0],
        format!("#{}", first8[0])
    );
    h.state_mut().state.view = View::Artifact {
        run: run.clone(),
        path: a_path.clone(),
    };
    step_until(&mut h, "the axis pictures", 30, |a| {
        a.heatmaps
            .get(&(a_path.clone(), "triple/am_before".to_string()))
            .is_some_and(|m| m.row_thumbs.as_ref().is_some_and(|t| t.len() == 8))
    });
    let range = |name: &str| {
        h.state()
            .heatmaps
            .get(&(a_path.clone(), format!("triple/{name}")))
            .unwrap()
            .range()
    };
    assert_eq!(
        range("am_before"),
        range("am_after"),
        "compared on one colour scale"
    );
    assert_eq!(range("am_before"), (0.1, 0.9));
}

#[test]
fn a_finished_run_is_evaluated_and_the_result_survives_a_restart() {
    use lethe_app::tasks::Loadable;
    let tmp = tempfile::tempdir().unwrap();
    let mut h = harness(LetheApp::new(AppState::default(), config(tmp.path())));
    open_demo(&mut h);
    choose_method(
        &mut h,
        "org.lethe.test.tensors",
        &[("lr", FormValue::Float(0.001))],
    );
    step_until(&mut h, "the checkpoint inspection", 60, |a| {
        a.state
            .draft
            .checkpoint
            .as_ref()
            .and_then(|c| a.checkpoints.get(c))
            .and_then(|l| l.ready())
            .is_some()
    });
    click_start(&mut h);
    step_until(&mut h, "the job to start", 30, |a| last_run(a).is_some());
    step_until(&mut h, "the job to finish", 180, |a| {
        last_run(a).is_some_and(|r| r.status.is_final())
    });
    let run = last_run(h.state()).unwrap().clone();
    assert_eq!(run.status, JobStatus::Succeeded, "{}", run.stderr_tail);
    h.step();
    // The first of the run's next steps, at the top of its view.
    h.get_by_label("1. Evaluate the new model").click();
    h.step();
    assert!(matches!(
        h.state().evaluations.get(&run.id),
        Some(Loadable::Loading)
    ));
    step_until(&mut h, "the evaluation", 300, |a| {
        !matches!(a.evaluations.get(&run.id), Some(Loadable::Loading))
    });
    let e = match h.state().evaluations.get(&run.id) {
        Some(Loadable::Ready(Some(e))) => e.clone(),
        other => panic!("{other:?}"),
    };
    let rows = e.rows();
    assert_eq!(rows.map(|r| r.0), ["retain", "test", "forget"]);
    for (name, before, after) in rows {
        let before = before.expect("the original's utility is beside");
        assert!(
            (0.0..=1.0).contains(&before) && (0.0..=1.0).contains(&after),
            "{name}"
        );
    }
    assert!(e.utility.forget.samples > 0);
    assert!(!e.per_class("test").is_empty());
    let run_dir = tmp.path().join("Demo/runs").join(&run.id);
    assert!(e.folder.starts_with(&run_dir), "{}", e.folder.display());
    assert!(e.folder.join("evaluation.json").is_file());
    h.step();
    assert!(h.query_by_label("Per class: forget").is_some());
    assert!(h.query_by_label("Evaluate again").is_some());
    // The run is a row of the project's comparison table, with its UA.
    h.get_by_label("📊 Compare the runs").click();
    h.step();
    h.step();
    assert_eq!(h.state().state.view, View::Compare);
    assert!(h.query_by_label("Tensor test").is_some());
    let ua = format!("{:.2}", e.utility.forget.accuracy * 100.0);
    assert!(
        h.query_all_by_label(&ua).count() >= 1,
        "UA {ua} in the table"
    );
    h.state_mut()
        .commands
        .push(Command::Show(View::Run(run.id.clone())));
    h.step();
    h.step();
    // The third step: the compliance report, in the run folder, in the audit
    // log with the run itself (and its run.json, written when it ended).
    h.get_by_label("4. Write the report (PDF)").click();
    step_until(&mut h, "the report", 120, |a| {
        !matches!(
            a.exports.get(&run.id),
            None | Some(lethe_app::tasks::Loadable::Loading)
        )
    });
    let (report, cert) = match h.state().exports.get(&run.id) {
        Some(lethe_app::tasks::Loadable::Ready(w)) => (w.path.clone(), w.certificate.clone()),
        other => panic!("{other:?}"),
    };
    // The report is certified as `lethe report` certifies it, and verifies.
    let cert = cert.expect("a deletion report comes with its certificate");
    assert!(cert.path.is_file(), "{}", cert.path.display());
    let v = lethe_engine::report::certificate::verify(
        &lethe_engine::report::certificate::VerifyRequest {
            file: report.clone(),
            model: None,
            original: None,
            forget: None,
            data: None,
            workspace: tmp.path().join("Demo"),
        },
    )
    .unwrap();
    assert!(v.ok(), "{:?}", v.findings);
    assert!(
        report.starts_with(run_dir.join("exports")),
        "{}",
        report.display()
    );
    assert!(std::fs::read(&report).unwrap().starts_with(b"%PDF"));
    assert!(run_dir.join("run.json").is_file());
    let log = lethe_engine::audit::AuditLog::open_existing(
        &tmp.path()
            .join("Demo")
            .join(lethe_engine::audit::AUDIT_FILE),
    )
    .unwrap();
    let kinds: Vec<String> = log
        .records()
        .unwrap()
        .into_iter()
        .map(|r| r.entry.kind)
        .collect();
    assert!(kinds.contains(&"unlearn".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"report".to_string()), "{kinds:?}");
    assert!(log.verify(None).unwrap().ok());

    // Restart: the evaluation is read back from the run folder.
    let saved = serde_json::to_string(&h.state().state).unwrap();
    drop(h);
    let state: AppState = serde_json::from_str(&saved).unwrap();
    let mut h = harness(LetheApp::new(state, config(tmp.path())));
    h.step();
    h.step();
    match h.state().evaluations.get(&run.id) {
        Some(Loadable::Ready(Some(again))) => assert_eq!(again, &e),
        other => panic!("{other:?}"),
    }

    // A failing evaluation shows its stderr; the app stays up.
    let model = run.model_artifact().unwrap().path.clone();
    std::fs::remove_file(&model).unwrap();
    h.get_by_label("Evaluate again").click();
    step_until(&mut h, "the failed evaluation", 120, |a| {
        matches!(a.evaluations.get(&run.id), Some(Loadable::Failed(_)))
    });
    match h.state().evaluations.get(&run.id) {
        Some(Loadable::Failed(msg)) => assert!(msg.contains("no such checkpoint"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert!(h.query_by_label("The evaluation failed").is_some());
}

/// A finished study folder as `lethe study` leaves it (study.json and one
/// result.json per run), written from the engine's own types.
fn write_study(dir: &Path, data: &Path, forget: &Path, ckpt: &Path) {
    use lethe_engine::study::results::{FORMAT, InputHashes, PluginRun, StudyManifest};
    use lethe_engine::study::spec::{EvaluateSpec, MethodSpec, RetrainSpec};
    use lethe_engine::study::{RowKind, RunResult, StudySpec};
    let method = |name: &str, id: &str| MethodSpec {
        name: name.into(),
        id: id.into(),
        params: serde_json::json!({}),
    };
    let spec = StudySpec {
        name: "demo".into(),
        checkpoint: ckpt.into(),
        data: data.into(),
        forget: forget.into(),
        seeds: vec![0, 1],
        device: "cpu".into(),
        metrics: vec!["ua".into(), "ra".into()],
        avg_gap: None,
        labels: Default::default(),
        avg_gap_label: None,
        original: false,
        timeout: None,
        retrain: RetrainSpec::default(),
        evaluate: EvaluateSpec::default(),
        methods: vec![
            method("FT", "org.lethe.baseline.finetune"),
            method("GA", "org.lethe.baseline.gradient-ascent"),
        ],
        attacks: vec![],
        slurm: None,
        scales: None,
    };
    let manifest = StudyManifest {
        format: FORMAT,
        spec,
        inputs: InputHashes {
            checkpoint_sha256: "c".repeat(64),
            data_sha256: "d".repeat(64),
            forget_sha256: "f".repeat(64),
            forget_count: 300,
        },
        device: "cpu".into(),
        lethe_version: "test".into(),
        created_unix: 0,
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("study.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    let runs = [
        ("Retrain", RowKind::Retrain, [(0.90, 0.95), (0.90, 0.95)]),
        ("FT", RowKind::Method, [(0.94, 0.93), (0.96, 0.93)]),
        ("GA", RowKind::Method, [(0.99, 0.96), (0.97, 0.94)]),
    ];
    for (row, kind, values) in runs {
        for (seed, (ua, ra)) in values.into_iter().enumerate() {
            let seed = seed as u64;
            let r = RunResult {
                format: FORMAT,
                row: row.into(),
                kind,
                seed,
                method: (kind == RowKind::Method).then(|| PluginRun {
                    id: "x".into(),
                    name: row.into(),
                    version: "1".into(),
                    library: "/x.so".into(),
                    params: serde_json::json!({}),
                }),
                model: "model/model.safetensors".into(),
                model_sha256: String::new(),
                weights_sha256: String::new(),
                seconds: 3.0,
                retrain_cache: None,
                metrics: [("ua".to_string(), ua), ("ra".to_string(), ra)].into(),
                evaluation: "evaluation/evaluation.json".into(),
                attacks: vec![],
                finished_unix: 0,
            };
            let run_dir = dir.join(lethe_engine::study::results::run_folder(row, seed));
            std::fs::create_dir_all(&run_dir).unwrap();
            std::fs::write(
                run_dir.join("result.json"),
                serde_json::to_vec_pretty(&r).unwrap(),
            )
            .unwrap();
        }
    }
}

#[test]
fn a_stored_study_reopens_with_its_table_sorted_and_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = harness(LetheApp::new(AppState::default(), config(tmp.path())));
    open_demo(&mut h);
    let (ckpt, data, forget) = {
        let d = &h.state().state.draft;
        (
            d.checkpoint.clone().unwrap(),
            d.data.clone().unwrap(),
            d.forget.clone().unwrap(),
        )
    };
    let dir = tmp.path().join("Demo/studies/demo");
    write_study(&dir, &data, &forget, &ckpt);
    // The workspace lists it once the project is opened again.
    h.state_mut()
        .commands
        .push(Command::OpenProject(tmp.path().join("Demo")));
    h.step();
    h.step();
    assert_eq!(h.state().study_list, vec![dir.clone()]);
    h.get_by_label("🔬 demo").click();
    step_until(&mut h, "the study", 30, |a| {
        a.study_results
            .get(&dir)
            .and_then(lethe_app::tasks::Loadable::ready)
            .is_some()
    });
    assert_eq!(h.state().state.view, View::Study(dir.clone()));
    assert!(h.query_by_label("COMPLETE").is_some());
    // mean ± sample std over the two seeds (in %), gap to Retrain's 90, best of
    // the column; ≈ where the paired interval over the two seeds holds 0
    // (FT's UA: +4, +6 points; GA's RA: +1, −1), none where it does not (FT's
    // RA: −2 in both seeds).
    assert!(h.query_by_label("95.00 ± 1.41 (5.00) ★ ≈").is_some());
    assert!(h.query_by_label("98.00 ± 1.41 (8.00) ≈").is_some());
    assert!(
        h.query_by_label("95.00 ± 1.41 (0.00) ★ ≈").is_some(),
        "GA's RA"
    );
    assert!(h.query_by_label("93.00 ± 0.00 (2.00)").is_some(), "FT's RA");
    h.get_by_label("UA").click();
    h.step();
    assert_eq!(h.state().state.study_table.sort, Some((0, false)));
    h.get_by_label("CSV").click();
    let exports = dir.join("exports");
    // Written off the UI thread; the window keeps drawing meanwhile.
    step_until(&mut h, "the export", 30, |_| {
        std::fs::read_dir(&exports).is_ok_and(|mut d| d.next().is_some())
    });
    let file = std::fs::read_dir(&exports)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let want = lethe_engine::study::StudyResults::load(&dir)
        .unwrap()
        .table()
        .to_csv();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), want);
    // The research report of the study, from the same folder (the buttons
    // wait while an export is being written).
    let key = dir.display().to_string();
    step_until(&mut h, "the CSV export to be reported", 30, |a| {
        matches!(
            a.exports.get(&key),
            Some(lethe_app::tasks::Loadable::Ready(_))
        )
    });
    h.get_by_label("Report (HTML)").click();
    h.step();
    step_until(&mut h, "the HTML export", 60, |a| {
        !matches!(
            a.exports.get(&key),
            Some(lethe_app::tasks::Loadable::Loading)
        )
    });
    match h.state().exports.get(&key) {
        Some(lethe_app::tasks::Loadable::Ready(w)) => {
            let (path, title) = (&w.path, &w.verdict);
            assert!(w.certificate.is_none(), "a study report is not certified");
            assert_eq!(path.extension().unwrap(), "html");
            assert!(title.starts_with("Study demo"), "{title}");
            let html = std::fs::read_to_string(path).unwrap();
            assert!(
                html.contains("FT") && html.contains("GA"),
                "the rows are in it"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_study_is_defined_in_the_form_started_and_stopped() {
    use lethe_app::study::{RunPlace, SlurmDraft};
    let tmp = tempfile::tempdir().unwrap();
    let mut h = harness(LetheApp::new(AppState::default(), config(tmp.path())));
    open_demo(&mut h);
    h.get_by_label("➕ New study…").click();
    h.step();
    {
        let d = &mut h.state_mut().state.study_draft;
        d.name = "gui study".into();
        d.retrain_id = "org.lethe.test.tensors".into();
        d.methods = vec![lethe_app::study::DraftMethod {
            name: "Step".into(),
            id: "org.lethe.test.tensors".into(),
        }];
        d.seeds = "0".into();
        d.metrics = vec!["ua".into()];
    }
    h.step();
    // On a Slurm cluster: the settings go into the study file's [slurm]
    // table (no cluster here, so the study is not started there).
    let mut on_slurm = h.state().state.study_draft.clone();
    on_slurm.run_on.place = RunPlace::Slurm;
    on_slurm.run_on.slurm = SlurmDraft {
        partition: "debug".into(),
        time: "00:30:00".into(),
        cpus: "2".into(),
        mem: "4G".into(),
        gpus: "1".into(),
        account: "lab".into(),
        max_parallel: "2".into(),
        extra_args: "--qos=short --exclusive".into(),
    };
    let spec = lethe_app::panels::study::spec_of(h.state(), &on_slurm).unwrap();
    let slurm = spec.slurm.clone().unwrap();
    assert_eq!(slurm.partition.as_deref(), Some("debug"));
    assert_eq!(slurm.gres.as_deref(), Some("gpu:1"));
    assert_eq!((slurm.cpus_per_task, slurm.max_parallel), (Some(2), 2));
    assert_eq!(slurm.extra_args, ["--qos=short", "--exclusive"]);
    let text = lethe_app::study::spec_toml(&spec).unwrap();
    assert!(text.contains("\n[slurm]\n"), "{text}");
    let file = tmp.path().join("slurm.toml");
    std::fs::write(&file, &text).unwrap();
    let back = lethe_engine::study::StudySpec::load(&file).unwrap();
    assert_eq!(back.slurm, Some(slurm));
    on_slurm.run_on.slurm.time = "half an hour".into();
    on_slurm.run_on.slurm.mem = "4 GB".into();
    let missing = lethe_app::panels::study::spec_of(h.state(), &on_slurm).unwrap_err();
    assert!(
        missing.iter().any(|m| m.starts_with("Slurm time limit: "))
            && missing.iter().any(|m| m.starts_with("Slurm memory: ")),
        "{missing:?}"
    );
    // The same on this machine has no [slurm] table.
    let here = lethe_app::panels::study::spec_of(h.state(), &h.state().state.study_draft);
    assert_eq!(here.unwrap().slurm, None);
    // Two runs at once on this machine: each its own process, shown as a
    // task list above the log.
    h.state_mut().state.study_draft.run_on.jobs = 2;
    h.step();
    h.get_by_label("▶  Run the study").click();
    h.step();
    let dir = tmp.path().join("Demo/studies/gui-study");
    assert_eq!(h.state().state.view, View::Study(dir.clone()));
    let file = tmp.path().join("Demo/studies/gui-study.toml");
    let spec = lethe_engine::study::StudySpec::load(&file).unwrap();
    assert_eq!(spec.methods[0].id, "org.lethe.test.tensors");
    assert_eq!(spec.methods[0].params["lr"], 0.5, "the plugin's default");
    assert_eq!(spec.seeds, [0]);
    assert_eq!(spec.slurm, None);
    // It runs in the background: the window keeps drawing while it starts.
    step_until(&mut h, "the runs to start", 120, |a| {
        a.study_live
            .get(&dir)
            .is_some_and(|l| l.tasks.active() && !l.tasks.tasks.is_empty())
    });
    assert!(h.query_by_label("RUNNING").is_some());
    let board = h.state().study_live[&dir].tasks.clone();
    assert_eq!(board.executor, "this machine, 2 at a time");
    assert_eq!(board.runs, 2);
    h.get_by_label("⏹ Stop the study").click();
    h.step();
    h.step();
    // It stops its runs before it ends; meanwhile it says so (the frame
    // drawn last saw the state asked about here).
    if h.state().study_is_stopping(&dir) {
        assert!(h.query_by_label("Stopping…").is_some());
    }
    step_until(&mut h, "the study to stop", 60, |a| {
        a.study_live
            .get(&dir)
            .is_some_and(|l| l.ended == Some(lethe_app::study::Ended::Cancelled))
    });
    assert!(h.query_by_label("⏹ Stop the study").is_none());
    assert!(dir.join("study.json").is_file(), "kept for a resume");
    assert!(lethe_app::study::log_path(&dir).is_file());
}

/// The crafted-file corpus of `tests/hostile/make_corpus.py`, written into `dir`.
fn hostile_corpus(dir: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = dir.join("corpus");
    let status = std::process::Command::new(repo.join(".venv/bin/python"))
        .arg(repo.join("tests/hostile/make_corpus.py"))
        .arg(&out)
        .arg(repo.join("resources"))
        .status()
        .unwrap();
    assert!(status.success(), "make_corpus.py failed");
    out
}

#[test]
fn hostile_files_are_refused_by_workers_and_a_file_that_kills_one_is_skipped_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = hostile_corpus(tmp.path());
    let project = tmp.path().join("Hostile");
    let mut h = harness(LetheApp::new(AppState::default(), config(tmp.path())));
    h.state_mut()
        .commands
        .push(Command::OpenProject(project.clone()));
    h.step();
    let checkpoints = [
        "self-referring.pt",
        "deep-nesting.pt",
        "memo-amplification.pt",
        "zip-bomb.pt",
        "expanded-view.pt",
    ]
    .map(|f| corpus.join(f));
    let datasets =
        ["zip-bomb.npz", "gzip-bomb-idx", "labels-beyond-samples.npz"].map(|f| corpus.join(f));
    for c in &checkpoints {
        h.state_mut()
            .commands
            .push(Command::AddCheckpoint(c.clone()));
    }
    for d in &datasets {
        h.state_mut().commands.push(Command::AddDataset(d.clone()));
    }
    h.step();
    for c in &checkpoints {
        h.state_mut().ensure_checkpoint(c);
    }
    for d in &datasets {
        h.state_mut().ensure_dataset(d, 0);
    }
    step_until(&mut h, "every crafted file refused", 120, |a| {
        checkpoints
            .iter()
            .all(|c| matches!(a.checkpoints.get(c), Some(Loadable::Failed(_))))
            && datasets
                .iter()
                .all(|d| matches!(a.datasets.get(&(d.clone(), 0)), Some(Loadable::Failed(_))))
    });
    let app = h.state();
    for c in &checkpoints {
        let Some(Loadable::Failed(m)) = app.checkpoints.get(c) else {
            unreachable!()
        };
        assert!(m.contains(&*c.to_string_lossy()), "{m}");
    }
    for d in &datasets {
        let Some(Loadable::Failed(m)) = app.datasets.get(&(d.clone(), 0)) else {
            unreachable!()
        };
        assert!(m.contains(&*d.to_string_lossy()), "{m}");
    }
    // Refusals are answers, not crashes: nothing is marked.
    assert!(app.project.as_ref().unwrap().file.suspect_files.is_empty());
    // The window shows them (the inspect view draws a refusal).
    h.state_mut().state.view = View::Checkpoint(checkpoints[0].clone());
    h.step();
    assert!(h.query_by_label_contains("no tensors found").is_some());
    drop(h);

    // A worker that dies reading a file: the window lives, the file is marked.
    let model = tmp.path().join("model.safetensors");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/demo/leaky-mlp.safetensors"),
        &model,
    )
    .unwrap();
    // It answers the hello (it got the job), then dies as a reader bug would.
    let mut frame = Vec::new();
    lethe_engine::worker::protocol::write_frame(
        &mut frame,
        &lethe_engine::worker::protocol::FromWorker::Hello(
            lethe_engine::worker::protocol::Hello::ours(),
        ),
    )
    .unwrap();
    let escaped: String = frame.iter().map(|b| format!("\\{b:03o}")).collect();
    let crashing = tmp.path().join("crashing-worker");
    std::fs::write(
        &crashing,
        format!("#!/bin/sh\nprintf '{escaped}'\nkill -SEGV $$\n"),
    )
    .unwrap();
    std::fs::set_permissions(
        &crashing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // A project of its own: every file of the first one would die the same way.
    let project = tmp.path().join("Crash");
    let mut cfg = config(tmp.path());
    cfg.worker = WorkerOptions::with_exe(&crashing);
    let mut h = harness(LetheApp::new(AppState::default(), cfg));
    h.state_mut()
        .commands
        .push(Command::OpenProject(project.clone()));
    h.step();
    h.state_mut()
        .commands
        .push(Command::AddCheckpoint(model.clone()));
    h.step();
    h.state_mut().ensure_checkpoint(&model);
    step_until(&mut h, "the crash to be reported", 60, |a| {
        matches!(a.checkpoints.get(&model), Some(Loadable::Failed(_)))
    });
    let marks = &h.state().project.as_ref().unwrap().file.suspect_files;
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(marks[0].path, model);
    assert!(marks[0].reason.contains("SIGSEGV"), "{}", marks[0].reason);
    // The mark is on disk too, where the next start reads it.
    let notices: Vec<&str> = h.state().notices.iter().map(|n| n.text.as_str()).collect();
    let on_disk = std::fs::read_to_string(project.join("lethe-project.json")).unwrap();
    assert!(
        on_disk.contains("SIGSEGV"),
        "{on_disk}\nnotices: {notices:?}"
    );
    let saved = serde_json::to_string(&h.state().state).unwrap();
    drop(h);

    // Restart with a sound worker: the marked file is skipped, not read, and
    // says why; "Read again" reads it (it is a good model after all).
    let state: AppState = serde_json::from_str(&saved).unwrap();
    let mut h = harness(LetheApp::new(state, config(tmp.path())));
    h.state_mut().ensure_checkpoint(&model);
    match h.state().checkpoints.get(&model) {
        Some(Loadable::Failed(m)) => {
            assert!(m.contains("not read") && m.contains("SIGSEGV"), "{m}")
        }
        other => panic!(
            "expected the marked file to be skipped, got {other:?}; project open: {:?}, error: {:?}, marks: {:?}, file now: {:?}",
            h.state().project.as_ref().map(|p| p.dir.clone()),
            h.state().project_error,
            h.state()
                .project
                .as_ref()
                .map(|p| p.file.suspect_files.clone()),
            std::fs::metadata(&model).map(|m| (m.len(), m.modified().ok())),
        ),
    }
    h.state_mut().state.view = View::Checkpoint(model.clone());
    h.step();
    h.get_by_label("Read again").click();
    h.step();
    h.step();
    step_until(&mut h, "the model read again", 60, |a| {
        matches!(a.checkpoints.get(&model), Some(Loadable::Ready(_)))
    });
    assert!(
        h.state()
            .project
            .as_ref()
            .unwrap()
            .file
            .suspect_files
            .is_empty()
    );
}

#[test]
fn switching_projects_forgets_everything_shown_about_the_previous_one() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = harness(LetheApp::new(AppState::default(), config(tmp.path())));
    open_demo(&mut h);
    let (ckpt, data, forget) = {
        let d = &h.state().state.draft;
        (
            d.checkpoint.clone().unwrap(),
            d.data.clone().unwrap(),
            d.forget.clone().unwrap(),
        )
    };
    let demo = tmp.path().join("Demo");
    let dir = demo.join("studies/demo");
    write_study(&dir, &data, &forget, &ckpt);
    h.state_mut()
        .commands
        .push(Command::OpenProject(demo.clone()));
    h.step();
    h.step();
    h.get_by_label("🔬 demo").click();
    step_until(&mut h, "the study", 30, |a| {
        a.study_results
            .get(&dir)
            .and_then(Loadable::ready)
            .is_some()
    });

    // Another case: nothing of the first may show, open or export there.
    let other = tmp.path().join("Case-2");
    h.state_mut()
        .commands
        .push(Command::OpenProject(other.clone()));
    h.step();
    h.step();
    let app = h.state();
    assert_eq!(app.project.as_ref().unwrap().dir, other);
    assert!(app.study_list.is_empty(), "{:?}", app.study_list);
    assert!(app.study_results.is_empty() && app.study_live.is_empty());
    assert!(app.evaluations.is_empty() && app.exports.is_empty() && app.verdicts.is_empty());
    let d = &app.state.draft;
    assert!(d.checkpoint.is_none() && d.data.is_none() && d.forget.is_none());
    assert!(
        h.query_by_label("🔬 demo").is_none(),
        "the sidebar lists no study of the demo"
    );
    assert_eq!(h.state().state.view, View::Home);

    // Back to the demo: its study is listed again, from its own folder.
    h.state_mut().commands.push(Command::OpenProject(demo));
    h.step();
    h.step();
    assert_eq!(h.state().study_list, vec![dir]);
}
