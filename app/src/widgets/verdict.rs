//! The verdict banner at the top of a finished deletion: PASS, FAIL or
//! INCONCLUSIVE in its colour, the one-line reason, the next step, and the
//! buttons that act on it. It draws plain data and returns what was clicked, so
//! the run view decides what a click does (and the snapshot tests can draw it).

use egui::{Color32, RichText};
use lethe_engine::report::verdict::{Outcome, Verdict};

/// What the user asked for from the banner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BannerAction {
    /// Open the last report written (PDF) with the desktop's viewer.
    OpenReport,
    /// Open the run folder with the desktop's file manager.
    OpenFolder,
    /// Queue exact retraining on the same request, as the reference.
    MakeReference,
}

/// The banner's colour for an outcome.
pub fn outcome_color(o: Outcome) -> Color32 {
    match o {
        Outcome::Pass => Color32::from_rgb(46, 160, 67),
        Outcome::Fail => Color32::from_rgb(215, 58, 58),
        Outcome::Inconclusive => Color32::from_rgb(214, 150, 20),
    }
}

/// Draws the banner. `report` is the last report written, if any;
/// `offer_reference` shows the button that makes a retrained reference.
pub fn banner(
    ui: &mut egui::Ui,
    v: &Verdict,
    report: Option<&std::path::Path>,
    offer_reference: bool,
) -> Option<BannerAction> {
    let color = outcome_color(v.outcome);
    let mut action = None;
    egui::Frame::new()
        .fill(color.linear_multiply(0.16))
        .stroke(egui::Stroke::new(1.5, color))
        .corner_radius(6.0)
        .inner_margin(egui::Margin::same(10))
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.horizontal(|ui| {
                ui.label(
                    RichText::new(v.outcome.label())
                        .size(22.0)
                        .strong()
                        .color(color),
                );
                // The label beside it already says "INCONCLUSIVE".
                let headline = match v.headline.strip_prefix("Inconclusive: ") {
                    Some(rest) => {
                        let mut c = rest.chars();
                        c.next()
                            .map(|f| f.to_uppercase().chain(c).collect())
                            .unwrap_or_default()
                    }
                    None => v.headline.clone(),
                };
                ui.add(egui::Label::new(RichText::new(headline).size(14.0).strong()).wrap());
            });
            if let Some(next) = &v.next_step {
                ui.add_space(2.0);
                ui.add(egui::Label::new(RichText::new(format!("Next step: {next}."))).wrap());
            }
            ui.add_space(4.0);
            ui.horizontal(|ui| {
                if offer_reference
                    && ui
                        .button("Make a retrained reference")
                        .on_hover_text(
                            "Queues Retrain (exact) on the same model, data and forget set; \
                             evaluate and attack it too, and the verdict compares with it",
                        )
                        .clicked()
                {
                    action = Some(BannerAction::MakeReference);
                }
                if let Some(path) = report
                    && ui
                        .button("Open the report")
                        .on_hover_text(path.display().to_string())
                        .clicked()
                {
                    action = Some(BannerAction::OpenReport);
                }
                if ui.button("Open the run folder").clicked() {
                    action = Some(BannerAction::OpenFolder);
                }
            });
        });
    action
}
