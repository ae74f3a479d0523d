//! The report as a document: headings, text, field lists, tables and figures.
//! Every format is rendered from the same document, so the PDF, the HTML, the CSV
//! and the LaTeX hold the same content.

use serde::Serialize;

/// Alignment of a table column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Align {
    /// Left.
    Left,
    /// Right (numbers).
    Right,
}

/// How a field's value is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Style {
    /// Body text.
    Text,
    /// Monospaced (hashes, paths, commands).
    Mono,
}

/// A table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    /// Short name (also the CSV `table` column).
    pub name: String,
    /// Column headers.
    pub header: Vec<String>,
    /// Cells, row by row.
    pub rows: Vec<Vec<String>>,
    /// Column alignment.
    pub align: Vec<Align>,
    /// Text under the table.
    pub note: Option<String>,
}

/// One line of a ROC plot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Curve {
    /// Legend text.
    pub label: String,
    /// Colour, RGB.
    pub color: [u8; 3],
    /// Dashed.
    pub dashed: bool,
    /// (FPR, TPR) points, FPR ascending.
    pub points: Vec<(f64, f64)>,
}

/// A ROC plot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RocPlot {
    /// Title above the plot.
    pub title: String,
    /// Log-log axes (FPR and TPR from 1e-3) instead of linear ones.
    pub log: bool,
    /// The curves.
    pub curves: Vec<Curve>,
}

/// A square matrix shown as colours.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Heatmap {
    /// Title above it.
    pub title: String,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Values, row-major.
    pub values: Vec<f64>,
    /// The value range the colours span.
    pub range: (f64, f64),
    /// Diverging blue–white–red (centred on 0) instead of sequential.
    pub diverging: bool,
}

/// A block of the document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Block {
    /// A section heading.
    Heading(String),
    /// A paragraph.
    Paragraph(String),
    /// Small grey text.
    Note(String),
    /// The verdict box: outcome label, colour and text.
    Verdict {
        /// `PASS`, `FAIL`, `INCONCLUSIVE`.
        label: String,
        /// Box colour.
        color: [u8; 3],
        /// The sentence.
        text: String,
    },
    /// Label–value pairs.
    Fields {
        /// Short name (the CSV `table` column).
        name: String,
        /// The pairs.
        fields: Vec<(String, String, Style)>,
    },
    /// A table.
    Table(Table),
    /// Plots side by side.
    Plots(Vec<RocPlot>),
    /// Heatmaps side by side.
    Heatmaps(Vec<Heatmap>),
    /// Monospaced lines (commands).
    Code(Vec<String>),
}

/// A whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Document {
    /// Title.
    pub title: String,
    /// Line under the title.
    pub subtitle: String,
    /// Generation time, already formatted: the only thing that changes when the
    /// same results are rendered again.
    pub generated: String,
    /// The content.
    pub blocks: Vec<Block>,
}

impl Document {
    /// Current section name while walking the blocks (for CSV and LaTeX).
    pub fn sections(&self) -> Vec<(String, &Block)> {
        let mut section = String::new();
        let mut out = Vec::new();
        for b in &self.blocks {
            if let Block::Heading(h) = b {
                section = h.clone();
            }
            out.push((section.clone(), b));
        }
        out
    }
}

/// Colours shared by the renderers.
pub mod palette {
    /// Unlearned model.
    pub const UNLEARNED: [u8; 3] = [0xd6, 0x27, 0x28];
    /// Original model.
    pub const ORIGINAL: [u8; 3] = [0x1f, 0x77, 0xb4];
    /// Retrained model.
    pub const RETRAIN: [u8; 3] = [0x2c, 0xa0, 0x2c];
    /// Held-out members (the attack's yardstick).
    pub const REFERENCE: [u8; 3] = [0x7f, 0x7f, 0x7f];
    /// Pass.
    pub const PASS: [u8; 3] = [0x2e, 0x7d, 0x32];
    /// Fail.
    pub const FAIL: [u8; 3] = [0xc6, 0x28, 0x28];
    /// Inconclusive.
    pub const INCONCLUSIVE: [u8; 3] = [0xb2, 0x6a, 0x00];
    /// Cycle for study plots.
    pub const CYCLE: [[u8; 3]; 8] = [
        [0x1f, 0x77, 0xb4],
        [0xd6, 0x27, 0x28],
        [0x2c, 0xa0, 0x2c],
        [0xff, 0x7f, 0x0e],
        [0x94, 0x67, 0xbd],
        [0x8c, 0x56, 0x4b],
        [0xe3, 0x77, 0xc2],
        [0x17, 0xbe, 0xcf],
    ];
}
