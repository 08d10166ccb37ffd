//! A report as PDF: A4 pages of text in the standard Helvetica font (no font embedded, so the
//! file stays a few kilobytes and every reader, pdftotext included, extracts the words), drawn
//! with pdf-writer. Rows are label and value at two fixed columns; a long report continues on
//! further pages.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};

use super::html::{tops, utc, volumes};
use super::Report;

const PAGE: (f32, f32) = (595.0, 842.0);
const MARGIN: f32 = 56.0;
const VALUE_COLUMN: f32 = 400.0;
const LINE: f32 = 16.0;

/// One line to draw: size, text at the left margin, optional value in the value column.
struct Line {
    size: f32,
    text: String,
    value: Option<String>,
}

fn lines(report: &Report) -> Vec<Line> {
    let line = |size, text: String, value: Option<String>| Line { size, text, value };
    let mut out = vec![
        line(
            18.0,
            format!("Bulwark {}", report.period.title().to_lowercase()),
            None,
        ),
        line(
            10.0,
            format!("from {} to {}", utc(report.from_ms), utc(report.to_ms)),
            None,
        ),
    ];
    for (node, why) in &report.missing {
        out.push(line(
            10.0,
            format!("node {node} did not answer: {why}"),
            None,
        ));
    }
    let nodes: Vec<&str> = report.nodes.iter().map(|(n, _)| n.as_str()).collect();
    out.push(line(10.0, format!("nodes: {}", nodes.join(", ")), None));
    out.push(line(14.0, "Volumes, all nodes".into(), None));
    for (label, _, value) in volumes(&report.total) {
        out.push(line(11.0, label.into(), Some(value.to_string())));
    }
    for (node, summary) in &report.nodes {
        out.push(line(14.0, format!("Node {node}"), None));
        for (label, _, value) in volumes(summary) {
            out.push(line(11.0, label.into(), Some(value.to_string())));
        }
    }
    for (title, _, list) in tops(&report.total) {
        out.push(line(14.0, title.into(), None));
        if list.is_empty() {
            out.push(line(11.0, "none".into(), None));
        }
        for count in list {
            out.push(line(11.0, count.key.clone(), Some(count.count.to_string())));
        }
    }
    out
}

/// Latin-1 text for the standard font; anything else becomes `?`.
fn latin1(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| {
            if (c as u32) < 256 && !c.is_control() {
                c as u8
            } else {
                b'?'
            }
        })
        .collect()
}

fn draw(content: &mut Content, font: Name<'_>, size: f32, x: f32, y: f32, text: &str) {
    content.begin_text();
    content.set_font(font, size);
    content.next_line(x, y);
    content.show(Str(&latin1(text)));
    content.end_text();
}

/// The PDF file's bytes.
pub fn render(report: &Report) -> Vec<u8> {
    let all = lines(report);
    let per_page = ((PAGE.1 - 2.0 * MARGIN) / LINE) as usize;
    let pages: Vec<&[Line]> = all.chunks(per_page.max(1)).collect();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let font = Ref::new(3);
    let font_name = Name(b"F1");
    let page_ids: Vec<Ref> = (0..pages.len())
        .map(|i| Ref::new(4 + 2 * i as i32))
        .collect();
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(page_ids.iter().copied())
        .count(pages.len() as i32);
    pdf.type1_font(font)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    for (page_lines, page_id) in pages.iter().zip(&page_ids) {
        let content_id = Ref::new(page_id.get() + 1);
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE.0, PAGE.1));
        page.parent(tree);
        page.contents(content_id);
        page.resources().fonts().pair(font_name, font);
        page.finish();
        let mut content = Content::new();
        let mut y = PAGE.1 - MARGIN;
        for line in page_lines.iter() {
            draw(&mut content, font_name, line.size, MARGIN, y, &line.text);
            if let Some(value) = &line.value {
                draw(&mut content, font_name, line.size, VALUE_COLUMN, y, value);
            }
            y -= if line.size > 12.0 { LINE * 1.5 } else { LINE };
        }
        pdf.stream(content_id, &content.finish());
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use bulwark::track::Summary;

    use super::*;
    use crate::reports::Period;

    #[test]
    fn a_report_renders_as_a_pdf_with_its_words() {
        let report = Report {
            period: Period::Daily,
            from_ms: 0,
            to_ms: 86_400_000,
            total: Summary {
                received: 42,
                ..Default::default()
            },
            nodes: vec![("node1".into(), Summary::default())],
            missing: vec![],
        };
        let bytes = render(&report);
        assert!(bytes.starts_with(b"%PDF-"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("Helvetica"));
        assert!(
            text.contains("(Messages received)"),
            "uncompressed text stream"
        );
        assert!(text.contains("(42)"));
    }
}
