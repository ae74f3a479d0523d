//! The plugins found (with the reasons some were refused) and the compute
//! runtime.

use crate::app::{Command, LetheApp};
use crate::catalog::is_test_plugin;
use crate::tasks::Loadable;
use egui::{Color32, RichText};

/// Every method and attack, and every refused library with its reason.
pub fn plugins(ui: &mut egui::Ui, app: &mut LetheApp) {
    ui.horizontal(|ui| {
        ui.heading("Plugins");
        if ui
            .button("Scan again")
            .on_hover_text("Look for plugin libraries again (each is loaded in a separate process)")
            .clicked()
        {
            app.commands.push(Command::RescanPlugins);
        }
    });
    let cat = match &app.catalog {
        Loadable::Ready(c) => c.clone(),
        Loadable::Loading => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Scanning the plugin folders…");
            });
            return;
        }
        Loadable::Failed(e) => {
            ui.colored_label(Color32::from_rgb(220, 60, 60), e);
            return;
        }
    };
    egui::ScrollArea::vertical()
        .id_salt("plugins")
        .show(ui, |ui| {
            ui.label("Folders searched, in order:");
            for d in &cat.dirs {
                ui.monospace(d.display().to_string());
            }
            if cat.dirs.is_empty() {
                ui.weak("none found (set LETHE_PLUGIN_PATH or use ~/.local/share/lethe/plugins)");
            }
            for kind in ["method", "attack"] {
                ui.add_space(8.0);
                let title = if kind == "method" {
                    "Unlearning methods"
                } else {
                    "Membership attacks"
                };
                let mut list: Vec<_> = cat.of_kind(kind).collect();
                list.sort_by_key(|e| is_test_plugin(&e.info.id));
                ui.label(RichText::new(format!("{title} ({})", list.len())).strong());
                egui::Grid::new(("plugins", kind))
                    .striped(true)
                    .num_columns(3)
                    .show(ui, |ui| {
                        for e in list {
                            let mut name = RichText::new(&e.info.name);
                            if is_test_plugin(&e.info.id) {
                                name = name.weak();
                            }
                            ui.label(name).on_hover_text(&e.info.description);
                            ui.monospace(format!("{} {}", e.info.id, e.info.version));
                            ui.label(format!("{} settings", e.info.schema.params.len()))
                                .on_hover_text(super::file_name(&e.library));
                            ui.end_row();
                        }
                    });
            }
            ui.add_space(8.0);
            ui.label(RichText::new(format!("Refused ({})", cat.refused.len())).strong());
            if cat.refused.is_empty() {
                ui.weak("none");
            }
            for r in &cat.refused {
                egui::Frame::group(ui.style()).show(ui, |ui| {
                    ui.set_width(ui.available_width());
                    ui.colored_label(Color32::from_rgb(200, 150, 40), super::file_name(&r.path));
                    ui.add(egui::Label::new(&r.reason).wrap());
                });
            }
        });
}

/// libtorch, CUDA and the devices.
pub fn runtime(ui: &mut egui::Ui, app: &mut LetheApp) {
    ui.heading("Compute runtime");
    ui.label(RichText::new("Jobs choose their device in the deletion request (step 5).").weak());
    ui.add_space(8.0);
    let Some(r) = &app.runtime else {
        ui.spinner();
        return;
    };
    crate::widgets::kv_grid(
        ui,
        "runtime",
        &[
            (
                "libtorch",
                format!("{} (tch {})", r.libtorch_version, r.tch_version),
            ),
            (
                "CUDA",
                if r.cuda {
                    format!("available, {} device(s)", r.cuda_devices)
                } else {
                    "not available".into()
                },
            ),
            (
                "CUDA build",
                match (r.built_with_cuda, r.libtorch_cuda_loaded) {
                    (false, _) => "no: this libtorch runs on the CPU only".to_string(),
                    (true, true) => "yes, and its CUDA library is loaded".to_string(),
                    (true, false) => "yes, but its CUDA library did not load".to_string(),
                },
            ),
            (
                "cuDNN",
                r.cudnn_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "no".into()),
            ),
            ("CPU threads", r.threads.to_string()),
        ],
    );
    ui.add_space(8.0);
    ui.label(RichText::new("Devices").strong());
    for d in &app.devices {
        ui.label(format!("{} — {}", d.id, d.label));
    }
}
