//! The egui/eframe window. It grows with the GUI issue; for now it shows what the
//! engine runs on, so a user can see at a glance whether the GPU is used.

use lethe_engine::runtime::RuntimeReport;

/// Everything the window remembers across restarts.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct AppState {
    show_runtime: bool,
}

struct LetheApp {
    state: AppState,
    runtime: RuntimeReport,
}

impl LetheApp {
    fn new(cc: &eframe::CreationContext<'_>) -> Self {
        let state = cc
            .storage
            .and_then(|s| eframe::get_value(s, eframe::APP_KEY))
            .unwrap_or(AppState { show_runtime: true });
        LetheApp {
            state,
            runtime: RuntimeReport::probe(),
        }
    }
}

impl eframe::App for LetheApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        egui::CentralPanel::default().show(ui, |ui| {
            ui.heading("Lethe — machine unlearning workbench");
            ui.separator();
            ui.checkbox(&mut self.state.show_runtime, "Show compute runtime");
            if self.state.show_runtime {
                let device = if self.runtime.cuda {
                    format!("CUDA ({} device(s))", self.runtime.cuda_devices)
                } else {
                    "CPU".to_string()
                };
                egui::Grid::new("runtime").striped(true).show(ui, |ui| {
                    ui.label("libtorch");
                    ui.label(&self.runtime.libtorch_version);
                    ui.end_row();
                    ui.label("compute device");
                    ui.label(device);
                    ui.end_row();
                    ui.label("CPU threads");
                    ui.label(self.runtime.threads.to_string());
                    ui.end_row();
                });
            }
        });
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.state);
    }
}

/// Opens the main window and blocks until it is closed.
pub fn run() -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Lethe")
            .with_inner_size([1100.0, 720.0]),
        ..Default::default()
    };
    eframe::run_native(
        "Lethe",
        options,
        Box::new(|cc| Ok(Box::new(LetheApp::new(cc)))),
    )
    .map_err(|e| anyhow::anyhow!("could not open the Lethe window: {e}"))
}
