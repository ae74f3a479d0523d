//! Reports: the compliance report of one deletion (PDF, self-contained HTML, CSV,
//! JSON, LaTeX tables) and the research report of a study.
//!
//! The app's export buttons and the CLI share one entry point: build a
//! [`Report`] ([`Report::deletion`], [`Report::study`] or [`Report::open`]) and
//! [`render`] it in a [`Format`], or [`write()`] it to a file. The generation
//! time is an argument: the same stored results rendered at the same time give
//! the same bytes, and at another time
//! differ only in the timestamp.
//!
//! * [`certificate`]: the signed deletion certificate and its check;
//! * [`sources`]: reading run records, evaluations and attacks;
//! * [`verdict`]: the pass/fail rules and their thresholds;
//! * [`deletion`]: the deletion report's content;
//! * [`study`]: the research report of a study;
//! * [`doc`]: the document model every format renders;
//! * [`html`], [`pdf`], [`tabular`] (CSV, LaTeX): the renderers;
//! * [`cli`]: `lethe report`.

pub mod certificate;
pub mod cli;
pub mod deletion;
pub mod doc;
pub mod format;
pub mod html;
pub mod pdf;
pub mod plot;
pub mod sources;
pub mod study;
pub mod tabular;
pub mod verdict;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use certificate::{Certificate, SignedCertificate};
pub use deletion::{DeletionReport, DeletionSources};
pub use doc::Document;
pub use study::StudyReport;

/// A report failed; the message names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// An input file is missing or unreadable.
    #[error("{path}: {message}")]
    Input {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The bundled fonts or the PDF encoding failed.
    #[error("PDF: {0}")]
    Font(String),
    /// Writing the report failed.
    #[error(transparent)]
    Write(#[from] crate::jobs::JobError),
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Typeset PDF with embedded fonts.
    Pdf,
    /// One self-contained HTML file.
    Html,
    /// Every field and table value as tidy CSV.
    Csv,
    /// The structured report.
    Json,
    /// The tables as LaTeX (booktabs).
    Tex,
}

impl Format {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Pdf => "pdf",
            Format::Html => "html",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Tex => "tex",
        }
    }
}

/// What a report is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Report {
    /// One deletion.
    Deletion(Box<DeletionReport>),
    /// A study.
    Study(Box<StudyReport>),
}

impl Report {
    /// Gathers the report of a deletion run.
    pub fn deletion(src: &DeletionSources) -> Result<Report, ReportError> {
        Ok(Report::Deletion(Box::new(DeletionReport::load(src)?)))
    }

    /// Gathers the report of a study folder.
    pub fn study(dir: &Path) -> Result<Report, ReportError> {
        Ok(Report::Study(Box::new(StudyReport::load(dir)?)))
    }

    /// A study folder (it holds `study.json`) or else a deletion run folder.
    pub fn open(src: &DeletionSources) -> Result<Report, ReportError> {
        if src.run.join(crate::study::results::STUDY_FILE).is_file() {
            Report::study(&src.run)
        } else {
            Report::deletion(src)
        }
    }

    /// The document, stamped with `generated_unix`.
    pub fn document(&self, generated_unix: i64) -> Document {
        let stamp = format::utc_datetime(generated_unix);
        match self {
            Report::Deletion(d) => d.document(&stamp),
            Report::Study(s) => s.document(&stamp),
        }
    }

    /// The files the report was built from.
    pub fn input_files(&self) -> Vec<PathBuf> {
        match self {
            Report::Deletion(d) => d.input_files(),
            Report::Study(s) => s.input_files(),
        }
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    format: &'static str,
    generated: String,
    lethe_version: &'static str,
    #[serde(flatten)]
    report: &'a Report,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate: Option<&'a Certificate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<&'a certificate::SignatureBlock>,
}

/// A signed certificate to show in a report, with the name of the detached
/// certificate file written beside it.
#[derive(Debug, Clone, Copy)]
pub struct Certified<'a> {
    /// The certificate and its signature.
    pub signed: &'a SignedCertificate,
    /// The detached file's name, as the report names it (`report.pdf.cert.json`).
    pub file_name: &'a str,
}

/// Renders `report` in `format`, stamped with `generated_unix` (without a
/// certificate; see [`render_with`]).
pub fn render(
    report: &Report,
    format: Format,
    generated_unix: i64,
) -> Result<Vec<u8>, ReportError> {
    render_with(report, format, generated_unix, None)
}

/// The document of `report`, with the certificate section last when certified.
fn document_with(report: &Report, generated_unix: i64, cert: Option<Certified<'_>>) -> Document {
    let mut doc = report.document(generated_unix);
    if let (Some(c), Report::Deletion(d)) = (cert, report) {
        let verify = certificate::verify_command(d, c.file_name);
        doc.blocks
            .extend(certificate::blocks(c.signed, c.file_name, &verify));
    }
    doc
}

/// Renders `report` in `format`, stamped with `generated_unix`; a deletion
/// report given `cert` shows it in a last section (PDF, HTML, CSV, LaTeX) or
/// carries it as the `certificate` and `signature` members (JSON).
pub fn render_with(
    report: &Report,
    format: Format,
    generated_unix: i64,
    cert: Option<Certified<'_>>,
) -> Result<Vec<u8>, ReportError> {
    let cert = cert.filter(|_| matches!(report, Report::Deletion(_)));
    Ok(match format {
        Format::Pdf => pdf::render(&document_with(report, generated_unix, cert), generated_unix)?,
        Format::Html => html::render(&document_with(report, generated_unix, cert)).into_bytes(),
        Format::Csv => match report {
            // The study's own numeric columns (mean, std, gap, delta, best).
            Report::Study(s) => s.table.to_csv().into_bytes(),
            Report::Deletion(_) => {
                tabular::csv(&document_with(report, generated_unix, cert)).into_bytes()
            }
        },
        Format::Tex => match report {
            Report::Study(s) => s
                .latex_table(&format::utc_datetime(generated_unix))
                .into_bytes(),
            Report::Deletion(_) => {
                tabular::tex(&document_with(report, generated_unix, cert)).into_bytes()
            }
        },
        Format::Json => {
            let j = JsonReport {
                format: "lethe-report/1",
                generated: format::utc_datetime(generated_unix),
                lethe_version: env!("CARGO_PKG_VERSION"),
                report,
                certificate: cert.map(|c| &c.signed.certificate),
                signature: cert.map(|c| &c.signed.signature),
            };
            let mut v = serde_json::to_vec_pretty(&j).map_err(|e| ReportError::Input {
                path: PathBuf::new(),
                message: format!("cannot encode the report as JSON: {e}"),
            })?;
            v.push(b'\n');
            v
        }
    })
}

/// Renders and writes atomically to `path` (never over an existing file unless
/// `overwrite`).
pub fn write(
    report: &Report,
    format: Format,
    generated_unix: i64,
    path: &Path,
    overwrite: bool,
) -> Result<(), ReportError> {
    let bytes = render(report, format, generated_unix)?;
    crate::jobs::atomic::write_atomic(path, &bytes, overwrite)?;
    Ok(())
}
