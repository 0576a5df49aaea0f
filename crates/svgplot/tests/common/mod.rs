//! Helpers shared by the chart tests: parse a document, check what every chart must satisfy, and read marks.

use roxmltree::{Document, Node};

/// Attributes that hold a plain number wherever they appear in the charts.
const NUMERIC: [&str; 11] = ["x", "y", "width", "height", "x1", "y1", "x2", "y2", "cx", "cy", "r"];

/// Parses `svg` and checks what every chart must satisfy: an `svg` root in the SVG namespace with a viewBox
/// matching its size, a white background first (after an optional `<title>`), and finite coordinates with
/// non-negative sizes.
pub fn parse(svg: &str) -> Document<'_> {
    let doc = Document::parse(svg).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(root.tag_name().namespace(), Some("http://www.w3.org/2000/svg"));
    let (w, h) = (num(root, "width"), num(root, "height"));
    assert_eq!(
        root.attribute("viewBox"),
        Some(format!("0 0 {} {}", root.attribute("width").unwrap(), root.attribute("height").unwrap()).as_str())
    );
    let background = root.children().filter(Node::is_element).find(|n| n.has_tag_name("rect")).unwrap();
    assert_eq!(
        (num(background, "width"), num(background, "height"), background.attribute("fill")),
        (w, h, Some("white"))
    );
    for node in doc.descendants().filter(Node::is_element) {
        assert!(!node.has_tag_name("script"));
        for attr in NUMERIC {
            if let Some(v) = node.attribute(attr) {
                let v: f64 = v.parse().unwrap_or_else(|_| panic!("{attr}={v:?} is not a number"));
                assert!(v.is_finite(), "{attr}={v}");
                if matches!(attr, "width" | "height" | "r") {
                    assert!(v >= 0.0, "{attr}={v} is negative");
                }
            }
        }
    }
    doc
}

/// The elements of class `class`, in document order.
pub fn class<'a, 'i>(doc: &'a Document<'i>, class: &str) -> Vec<Node<'a, 'i>> {
    doc.descendants().filter(|n| n.attribute("class") == Some(class)).collect()
}

/// The numeric attribute `attr` of `node`.
pub fn num(node: Node, attr: &str) -> f64 {
    node.attribute(attr).unwrap_or_else(|| panic!("no {attr}")).parse().unwrap()
}

/// The text of `node`'s `<title>` child (its tooltip).
pub fn title(node: Node) -> String {
    node.children()
        .find(|n| n.has_tag_name("title"))
        .and_then(|n| n.text())
        .unwrap_or_else(|| panic!("no title"))
        .to_string()
}
