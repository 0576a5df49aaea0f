//! A tiny SVG writer: elements with escaped attributes and text, appended to one string.

use crate::fmt::coord;

/// A value an attribute can take: numbers are written as coordinates, text is escaped.
pub(crate) trait AttrValue {
    /// Appends the attribute's text, escaped, to `out`.
    fn write_to(&self, out: &mut String);
}

impl AttrValue for f64 {
    fn write_to(&self, out: &mut String) {
        out.push_str(&coord(*self));
    }
}

impl AttrValue for &str {
    fn write_to(&self, out: &mut String) {
        escape_into(self, out);
    }
}

impl AttrValue for String {
    fn write_to(&self, out: &mut String) {
        escape_into(self, out);
    }
}

/// Attributes of one element, in the order they are written.
pub(crate) type Attrs<'a> = &'a [(&'a str, &'a dyn AttrValue)];

/// An SVG document being written; [`Svg::finish`] closes the root element.
pub(crate) struct Svg {
    out: String,
}

impl Svg {
    /// Opens a standalone SVG 1.1 document of `width` x `height` pixels with a white background, and with `title`
    /// as its accessible name unless that is empty.
    pub(crate) fn new(width: f64, height: f64, title: &str) -> Self {
        let mut svg = Svg { out: String::new() };
        let view_box = format!("0 0 {} {}", coord(width), coord(height));
        svg.open(
            "svg",
            &[
                ("xmlns", &"http://www.w3.org/2000/svg"),
                ("version", &"1.1"),
                ("width", &width),
                ("height", &height),
                ("viewBox", &view_box),
                ("font-family", &"sans-serif"),
            ],
        );
        if !title.is_empty() {
            svg.text("title", &[], title);
        }
        svg.leaf("rect", &[("width", &width), ("height", &height), ("fill", &"white")]);
        svg
    }

    /// Writes an empty element `<name .../>`.
    pub(crate) fn leaf(&mut self, name: &str, attrs: Attrs) {
        self.start_tag(name, attrs);
        self.out.push_str("/>\n");
    }

    /// Writes a start tag `<name ...>`; [`Svg::close`] ends the element.
    pub(crate) fn open(&mut self, name: &str, attrs: Attrs) {
        self.start_tag(name, attrs);
        self.out.push_str(">\n");
    }

    /// Writes the end tag `</name>`.
    pub(crate) fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    /// Writes `<name ...>text</name>` with `text` escaped.
    pub(crate) fn text(&mut self, name: &str, attrs: Attrs, text: &str) {
        self.start_tag(name, attrs);
        self.out.push('>');
        escape_into(text, &mut self.out);
        self.close(name);
    }

    /// Closes the root element and returns the document.
    pub(crate) fn finish(mut self) -> String {
        self.close("svg");
        self.out
    }

    fn start_tag(&mut self, name: &str, attrs: Attrs) {
        self.out.push('<');
        self.out.push_str(name);
        for (key, value) in attrs {
            self.out.push(' ');
            self.out.push_str(key);
            self.out.push_str("=\"");
            value.write_to(&mut self.out);
            self.out.push('"');
        }
    }
}

/// Appends `s` to `out` with the five XML special characters replaced by entities, and the characters XML 1.0
/// forbids even as references (control characters other than tab, newline and carriage return) replaced by U+FFFD.
fn escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\t' | '\n' | '\r' => out.push(c),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_attributes_and_text() {
        let mut svg = Svg { out: String::new() };
        svg.text("text", &[("class", &"a&b"), ("x", &1.5)], "<'\">");
        assert_eq!(svg.out, "<text class=\"a&amp;b\" x=\"1.5\">&lt;&apos;&quot;&gt;</text>\n");
        let mut svg = Svg { out: String::new() };
        svg.text("title", &[], "a\u{1}b\tc");
        assert_eq!(svg.out, "<title>a\u{fffd}b\tc</title>\n");
    }
}
