//! The one serde `AppState` eframe persists between sessions: which project is
//! open, what is shown, and the half-filled deletion so nothing typed is lost.
//! Everything derived from files (inspections, scans, job records) is not here:
//! it is re-read from disk or re-computed on start.

use crate::form::FormValues;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What the central panel shows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub enum View {
    /// Welcome / project chooser.
    #[default]
    Home,
    /// The deletion request: model, data, forget set, method, run.
    Deletion,
    /// One run.
    Run(String),
    /// A checkpoint's inspection.
    Checkpoint(PathBuf),
    /// A dataset's inspection.
    Dataset(PathBuf),
    /// A forget set (list file path).
    ForgetSet(PathBuf),
    /// An artifact of a run (heatmap, ROC, histogram, JSON).
    Artifact {
        /// Run id.
        run: String,
        /// The file.
        path: PathBuf,
    },
    /// Plugins found (and refused).
    Plugins,
    /// Compute runtime (libtorch, devices).
    Runtime,
    /// The job queue.
    Jobs,
    /// Defining a new study.
    NewStudy,
    /// A study (its folder).
    Study(PathBuf),
    /// The project's deletion runs compared in one table.
    Compare,
}

pub use lethe_engine::preview::ForgetMode;

/// The new-forget-set form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ForgetDraft {
    /// How.
    pub mode: ForgetMode,
    /// List file path, as typed.
    pub list_path: String,
    /// Class label.
    pub class: i64,
    /// Fraction of the training split.
    pub fraction: f64,
    /// Seed of the random fraction.
    pub fraction_seed: u64,
    /// Image folder, as typed.
    pub folder: String,
    /// Forget only the matched images when some match nothing (an explicit choice).
    pub accept_unmatched: bool,
    /// Name to save it under.
    pub name: String,
}

impl Default for ForgetDraft {
    fn default() -> Self {
        ForgetDraft {
            mode: ForgetMode::default(),
            list_path: String::new(),
            class: 0,
            fraction: 0.05,
            fraction_seed: 1,
            folder: String::new(),
            accept_unmatched: false,
            name: String::new(),
        }
    }
}

/// The deletion request being put together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Draft {
    /// The model.
    pub checkpoint: Option<PathBuf>,
    /// Its training data.
    pub data: Option<PathBuf>,
    /// The forget set (its list file).
    pub forget: Option<PathBuf>,
    /// Method plugin id.
    pub method: Option<String>,
    /// `cpu`, `cuda:N`.
    pub device: String,
    /// Whether the user picked the device (else the first GPU is preferred).
    pub device_chosen: bool,
    /// Seed for the split (when the data records none) and shuffling.
    pub seed: u64,
    /// Whether the new-forget-set form is open.
    pub forget_form_open: bool,
}

impl Default for Draft {
    fn default() -> Self {
        Draft {
            checkpoint: None,
            data: None,
            forget: None,
            method: None,
            device: "cpu".into(),
            device_chosen: false,
            seed: 0,
            forget_form_open: false,
        }
    }
}

/// Everything persisted by eframe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppState {
    /// The open project's folder.
    pub project_dir: Option<PathBuf>,
    /// Recently opened project folders, newest first.
    pub recent: Vec<PathBuf>,
    /// Whether the first-start offer (demo or own project) was answered.
    pub welcomed: bool,
    /// What the central panel shows.
    pub view: View,
    /// The deletion being prepared.
    pub draft: Draft,
    /// The forget set being made.
    pub forget_draft: ForgetDraft,
    /// Form values per plugin id (a method's settings are kept when switching).
    pub forms: BTreeMap<String, FormValues>,
    /// ROC axes logarithmic.
    pub roc_log: bool,
    /// Log levels hidden in the run view.
    pub hide_debug: bool,
    /// Format of the deletion report (its file extension).
    pub report_format: String,
    /// The study being defined.
    pub study_draft: crate::study::StudyDraft,
    /// Sorting and colours of study tables.
    pub study_table: crate::widgets::table::TableView,
    /// Sorting and colours of the runs comparison table.
    pub compare_table: crate::widgets::table::TableView,
}

impl Default for AppState {
    fn default() -> Self {
        AppState {
            project_dir: None,
            recent: Vec::new(),
            welcomed: false,
            view: View::default(),
            draft: Draft::default(),
            forget_draft: ForgetDraft::default(),
            forms: BTreeMap::new(),
            roc_log: false,
            hide_debug: false,
            report_format: "pdf".into(),
            study_draft: Default::default(),
            study_table: Default::default(),
            compare_table: Default::default(),
        }
    }
}

impl AppState {
    /// Remembers `dir` as the newest recent project (at most 8).
    pub fn remember_project(&mut self, dir: PathBuf) {
        self.recent.retain(|d| d != &dir);
        self.recent.insert(0, dir.clone());
        self.recent.truncate(8);
        self.project_dir = Some(dir);
        self.welcomed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::FormValue;

    #[test]
    fn app_state_round_trips_through_json() {
        let mut s = AppState::default();
        s.remember_project("/p/a".into());
        s.remember_project("/p/b".into());
        s.remember_project("/p/a".into());
        assert_eq!(s.recent, vec![PathBuf::from("/p/a"), "/p/b".into()]);
        s.view = View::Artifact {
            run: "r1".into(),
            path: "/p/a/runs/r1/output/x.safetensors".into(),
        };
        s.draft.checkpoint = Some("/m.safetensors".into());
        s.draft.method = Some("org.lethe.baseline.finetune".into());
        s.forget_draft.mode = ForgetMode::Folder;
        s.forms.insert(
            "org.lethe.baseline.finetune".into(),
            FormValues {
                values: [("lr".to_string(), FormValue::Float(0.02))].into(),
            },
        );
        let text = serde_json::to_string(&s).unwrap();
        let back: AppState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn old_or_partial_state_falls_back_to_defaults() {
        // A state saved by an older version with fewer fields still loads.
        let back: AppState =
            serde_json::from_str(r#"{"project_dir": "/p", "welcomed": true}"#).unwrap();
        assert_eq!(back.project_dir, Some(PathBuf::from("/p")));
        assert_eq!(back.draft.device, "cpu");
        assert_eq!(back.forget_draft.fraction, 0.05);
        assert_eq!(back.view, View::Home);
    }

    #[test]
    fn recent_list_is_bounded() {
        let mut s = AppState::default();
        for i in 0..20 {
            s.remember_project(format!("/p/{i}").into());
        }
        assert_eq!(s.recent.len(), 8);
        assert_eq!(s.recent[0], PathBuf::from("/p/19"));
    }
}
