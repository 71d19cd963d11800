//! The few XML reads and writes S3's answers and requests need: the text of a flat
//! `<tag>...</tag>`, the blocks of a repeated tag, entity (un)escaping.
//!
//! Not a general XML parser and must never be used as one: it assumes S3's flat answers
//! (no namespace prefixes, no tag nested inside itself, no CDATA). Pure: no I/O.

/// Largest error or listing body read into memory.
pub(super) const MAX_XML_BODY: u64 = 32 << 20;

/// The contents of every `<tag>...</tag>` in `xml` (no nesting of the same tag).
pub(super) fn xml_blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

/// The unescaped text of the first `<tag>...</tag>` in `xml`.
pub(super) fn xml_text(xml: &str, tag: &str) -> Option<String> {
    xml_blocks(xml, tag).first().map(|s| xml_unescape(s))
}

fn xml_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(end) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let ent = &tail[1..end];
        let ch = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ if ent.starts_with("#x") || ent.starts_with("#X") => {
                u32::from_str_radix(&ent[2..], 16)
                    .ok()
                    .and_then(char::from_u32)
            }
            _ if ent.starts_with('#') => ent[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => out.push(c),
            None => out.push_str(&tail[..=end]),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

pub(super) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml() {
        let body = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a&amp;b</Key><Size>3</Size></Contents><Contents><Key>c</Key><Size>4</Size></Contents><NextContinuationToken>t/1=</NextContinuationToken></ListBucketResult>";
        let c = xml_blocks(body, "Contents");
        assert_eq!(c.len(), 2);
        assert_eq!(xml_text(c[0], "Key").unwrap(), "a&b");
        assert_eq!(xml_text(body, "NextContinuationToken").unwrap(), "t/1=");
        assert_eq!(xml_unescape("&#65;&#x42;&quot;&bogus;"), "AB\"&bogus;");
        assert_eq!(xml_escape("\"e\"&"), "&quot;e&quot;&amp;");
    }
}
