//! The document as a PDF: laid out by [`layout`], written with `pdf-writer`, the
//! bundled fonts embedded as subsets (CID fonts with a ToUnicode map, so text can
//! be searched and copied).
//!
//! Deterministic by construction: no file ID, fixed object order, fixed
//! compression, and the generation timestamp is the only varying content. It sits
//! in the Info dictionary's `CreationDate` and in a small uncompressed content
//! stream per page, set in the monospaced font whose digits are always part of
//! the subset, so two renderings differ only in those bytes.

pub mod font;
pub mod layout;

use std::collections::BTreeMap;
use std::io::Write;

use flate2::Compression;
use flate2::write::ZlibEncoder;
use pdf_writer::types::{CidFontType, FontFlags, SystemInfo, UnicodeCmap};
use pdf_writer::{Content, Date, Filter, Finish, Name, Pdf, Rect, Ref, Str, TextStr};
use sha2::{Digest, Sha256};

use super::ReportError;
use super::doc::Document;
use font::{FontKey, font};
use layout::{Laid, Op, PAGE_H, PAGE_W};

/// Characters the timestamp can use: always in the monospaced subset, so the
/// subset does not depend on the time.
const STAMP_CHARS: &str = "0123456789-: UTC";

fn deflate(bytes: &[u8]) -> Result<Vec<u8>, ReportError> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::new(6));
    e.write_all(bytes)
        .and_then(|_| e.finish())
        .map_err(|e| ReportError::Font(format!("cannot compress a PDF stream: {e}")))
}

/// Glyphs a font is asked for, and the character behind each (for ToUnicode).
#[derive(Default)]
struct Usage {
    glyphs: BTreeMap<u16, char>,
}

struct Embedded {
    remapper: subsetter::GlyphRemapper,
}

impl Embedded {
    fn encode(&self, key: FontKey, text: &str) -> Result<Vec<u8>, ReportError> {
        let f = font(key)?;
        let mut out = Vec::with_capacity(text.len() * 2);
        for c in text.chars() {
            let cid = self.remapper.get(f.gid(c)).unwrap_or(0);
            out.extend_from_slice(&cid.to_be_bytes());
        }
        Ok(out)
    }
}

fn rgb(c: [u8; 3]) -> (f32, f32, f32) {
    (
        f32::from(c[0]) / 255.0,
        f32::from(c[1]) / 255.0,
        f32::from(c[2]) / 255.0,
    )
}

/// Page coordinates (y up) of a layout point (y down).
fn flip(y: f64) -> f32 {
    (PAGE_H - y) as f32
}

/// Renders the document.
pub fn render(doc: &Document, generated_unix: i64) -> Result<Vec<u8>, ReportError> {
    let laid = layout::layout(doc)?;
    write(&laid, doc, generated_unix)
}

fn write(laid: &Laid, doc: &Document, generated_unix: i64) -> Result<Vec<u8>, ReportError> {
    // Which glyphs each font needs.
    let mut usage: BTreeMap<FontKey, Usage> = BTreeMap::new();
    usage.entry(FontKey::Mono).or_default();
    for page in &laid.pages {
        for op in page {
            if let Op::Text {
                font: key, text, ..
            } = op
            {
                let f = font(*key)?;
                let u = usage.entry(*key).or_default();
                for c in text.chars() {
                    u.glyphs.entry(f.gid(c)).or_insert(c);
                }
            }
        }
    }
    {
        let mono = font(FontKey::Mono)?;
        let u = usage.entry(FontKey::Mono).or_default();
        for c in STAMP_CHARS.chars() {
            u.glyphs.entry(mono.gid(c)).or_insert(c);
        }
    }

    let mut pdf = Pdf::new();
    let mut next = 1;
    let mut alloc = || {
        let r = Ref::new(next);
        next += 1;
        r
    };
    let catalog = alloc();
    let tree = alloc();
    let info = alloc();

    // Fonts.
    let mut embedded: BTreeMap<FontKey, (Ref, Embedded)> = BTreeMap::new();
    for (key, u) in &usage {
        let f = font(*key)?;
        let gids: Vec<u16> = u.glyphs.keys().copied().collect();
        let remapper = subsetter::GlyphRemapper::new_from_glyphs_sorted(&gids);
        let subset = subsetter::subset(f.data, 0, &remapper)
            .map_err(|e| ReportError::Font(format!("cannot subset {}: {e}", key.ps_name())))?;
        let (type0, cid, descriptor, file, cmap) = (alloc(), alloc(), alloc(), alloc(), alloc());
        // Subset tag: six letters from the glyph set, as PDF requires, stable for
        // the same glyphs.
        let digest = Sha256::digest(
            gids.iter()
                .flat_map(|g| g.to_be_bytes())
                .collect::<Vec<u8>>(),
        );
        let tag: String = digest[..6]
            .iter()
            .map(|b| char::from(b'A' + b % 26))
            .collect();
        let base = format!("{tag}+{}", key.ps_name());
        pdf.type0_font(type0)
            .base_font(Name(base.as_bytes()))
            .encoding_predefined(Name(b"Identity-H"))
            .descendant_font(cid)
            .to_unicode(cmap);
        let system = SystemInfo {
            registry: Str(b"Adobe"),
            ordering: Str(b"Identity"),
            supplement: 0,
        };
        let mut widths = Vec::new();
        for old in remapper.remapped_gids() {
            widths.push((f.advance(old) * 1000.0) as f32);
        }
        let mut cidf = pdf.cid_font(cid);
        cidf.subtype(CidFontType::Type2)
            .base_font(Name(base.as_bytes()))
            .system_info(system)
            .font_descriptor(descriptor)
            .default_width(0.0)
            .cid_to_gid_map_predefined(Name(b"Identity"));
        cidf.widths().consecutive(0, widths);
        cidf.finish();
        let (asc, desc, cap) = f.metrics();
        let (x0, y0, x1, y1) = f.bbox();
        let (italic, mono) = f.style();
        let mut flags = FontFlags::NON_SYMBOLIC;
        if mono {
            flags |= FontFlags::FIXED_PITCH;
        }
        pdf.font_descriptor(descriptor)
            .name(Name(base.as_bytes()))
            .flags(flags)
            .bbox(Rect::new(
                (x0 * 1000.0) as f32,
                (y0 * 1000.0) as f32,
                (x1 * 1000.0) as f32,
                (y1 * 1000.0) as f32,
            ))
            .italic_angle(italic as f32)
            .ascent((asc * 1000.0) as f32)
            .descent((desc * 1000.0) as f32)
            .cap_height((cap * 1000.0) as f32)
            .stem_v(if *key == FontKey::Bold { 140.0 } else { 80.0 })
            .font_file2(file);
        let packed = deflate(&subset)?;
        pdf.stream(file, &packed)
            .filter(Filter::FlateDecode)
            .pair(Name(b"Length1"), subset.len() as i32);
        let mut unicode = UnicodeCmap::new(Name(b"Custom"), system);
        for (gid, c) in &u.glyphs {
            if let Some(new) = remapper.get(*gid) {
                unicode.pair(new, *c);
            }
        }
        pdf.cmap(cmap, &unicode.finish());
        embedded.insert(*key, (type0, Embedded { remapper }));
    }

    // Images.
    let mut image_refs = Vec::new();
    for img in &laid.images {
        let id = alloc();
        let packed = deflate(&img.rgb)?;
        let mut x = pdf.image_xobject(id, &packed);
        x.width(img.width as i32).height(img.height as i32);
        x.color_space().device_rgb();
        x.bits_per_component(8).interpolate(false);
        x.filter(Filter::FlateDecode);
        x.finish();
        image_refs.push(id);
    }

    // Pages.
    let mut page_refs = Vec::new();
    for ops in &laid.pages {
        let (page_id, main_id, stamp_id) = (alloc(), alloc(), alloc());
        page_refs.push(page_id);
        let mut c = Content::new();
        let mut stamp = Vec::new();
        for op in ops {
            match op {
                Op::Text {
                    font: key,
                    size,
                    x,
                    y,
                    text,
                    color,
                    rotated,
                    stamp: is_stamp,
                } => {
                    let Some((_, emb)) = embedded.get(key) else {
                        continue;
                    };
                    let bytes = emb.encode(*key, text)?;
                    let (r, g, b) = rgb(*color);
                    if *is_stamp {
                        // Written by hand so its length never depends on the time.
                        let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
                        let _ = writeln!(
                            stamp,
                            "BT /{} {size:.2} Tf {r:.3} {g:.3} {b:.3} rg 1 0 0 1 {x:.2} {:.2} Tm <{hex}> Tj ET",
                            String::from_utf8_lossy(key.resource()),
                            flip(*y)
                        );
                        continue;
                    }
                    c.begin_text();
                    c.set_font(Name(key.resource()), *size as f32);
                    c.set_fill_rgb(r, g, b);
                    let m = if *rotated {
                        [0.0, 1.0, -1.0, 0.0, *x as f32, flip(*y)]
                    } else {
                        [1.0, 0.0, 0.0, 1.0, *x as f32, flip(*y)]
                    };
                    c.set_text_matrix(m);
                    c.show(Str(&bytes));
                    c.end_text();
                }
                Op::Rect {
                    x,
                    y,
                    w,
                    h,
                    fill,
                    stroke,
                } => {
                    c.rect(*x as f32, flip(y + h), *w as f32, *h as f32);
                    match (fill, stroke) {
                        (Some(f), Some((s, lw))) => {
                            let (r, g, b) = rgb(*f);
                            c.set_fill_rgb(r, g, b);
                            let (r, g, b) = rgb(*s);
                            c.set_stroke_rgb(r, g, b);
                            c.set_line_width(*lw as f32);
                            c.fill_nonzero_and_stroke();
                        }
                        (Some(f), None) => {
                            let (r, g, b) = rgb(*f);
                            c.set_fill_rgb(r, g, b);
                            c.fill_nonzero();
                        }
                        (None, Some((s, lw))) => {
                            let (r, g, b) = rgb(*s);
                            c.set_stroke_rgb(r, g, b);
                            c.set_line_width(*lw as f32);
                            c.stroke();
                        }
                        (None, None) => {
                            c.end_path();
                        }
                    }
                }
                Op::Line {
                    points,
                    color,
                    width,
                    dashed,
                } => {
                    let Some(&(x0, y0)) = points.first() else {
                        continue;
                    };
                    let (r, g, b) = rgb(*color);
                    c.save_state();
                    c.set_stroke_rgb(r, g, b);
                    c.set_line_width(*width as f32);
                    if *dashed {
                        c.set_dash_pattern([3.0, 2.0], 0.0);
                    }
                    c.move_to(x0 as f32, flip(y0));
                    for &(x, y) in &points[1..] {
                        c.line_to(x as f32, flip(y));
                    }
                    c.stroke();
                    c.restore_state();
                }
                Op::Image { x, y, w, h, image } => {
                    let name = format!("Im{image}");
                    c.save_state();
                    c.transform([*w as f32, 0.0, 0.0, *h as f32, *x as f32, flip(y + h)]);
                    c.x_object(Name(name.as_bytes()));
                    c.restore_state();
                }
            }
        }
        let main = deflate(&c.finish())?;
        pdf.stream(main_id, &main).filter(Filter::FlateDecode);
        pdf.stream(stamp_id, &stamp);
        let mut page = pdf.page(page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_W as f32, PAGE_H as f32))
            .parent(tree);
        page.insert(Name(b"Contents"))
            .array()
            .items([main_id, stamp_id]);
        let mut res = page.resources();
        {
            let mut fonts = res.fonts();
            for (key, (r, _)) in &embedded {
                fonts.pair(Name(key.resource()), *r);
            }
        }
        {
            let mut xo = res.x_objects();
            for (i, r) in image_refs.iter().enumerate() {
                let name = format!("Im{i}");
                xo.pair(Name(name.as_bytes()), *r);
            }
        }
        res.finish();
        page.finish();
    }
    pdf.pages(tree)
        .kids(page_refs.iter().copied())
        .count(page_refs.len() as i32);
    pdf.catalog(catalog).pages(tree);
    let (y, mo, d, h, mi, s) = super::format::civil(generated_unix);
    pdf.document_info(info)
        .title(TextStr(&doc.title))
        .subject(TextStr(&doc.subtitle))
        .creator(TextStr("Lethe"))
        .producer(TextStr(concat!("Lethe ", env!("CARGO_PKG_VERSION"))))
        .creation_date(
            Date::new(y as u16)
                .month(mo as u8)
                .day(d as u8)
                .hour(h as u8)
                .minute(mi as u8)
                .second(s as u8)
                .utc_offset_hour(0),
        );
    Ok(pdf.finish())
}
