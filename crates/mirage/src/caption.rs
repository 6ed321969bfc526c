//! The ultra-low mode's caption from an image's own metadata: the EXIF
//! ImageDescription tag, else the XMP `dc:description` (its `x-default` entry).
//!
//! Metadata is whatever a camera or editor wrote, so a description that is not
//! UTF-8, too long for the caption section or not one line of text is reported (as
//! `Err` with the reason) rather than stored mangled or silently dropped.

use mirage_format::ultralow::check_caption;

/// The description to use as a caption, if the metadata has one.
pub fn description(exif: Option<&[u8]>, xmp: Option<&[u8]>) -> Result<Option<String>, String> {
    if let Some(text) = exif.map(exif_description).transpose()?.flatten() {
        return checked(text, "EXIF ImageDescription").map(Some);
    }
    if let Some(text) = xmp.map(xmp_description).transpose()?.flatten() {
        return checked(text, "XMP dc:description").map(Some);
    }
    Ok(None)
}

fn checked(text: String, what: &str) -> Result<String, String> {
    let text = text.trim().to_string();
    check_caption(&text).map(|_| text).map_err(|e| {
        format!("its {what} cannot be a caption ({e}); give --caption or --no-caption")
    })
}

/// ImageDescription (tag 0x010E) of a raw EXIF block (TIFF header first).
fn exif_description(raw: &[u8]) -> Result<Option<String>, String> {
    let Ok(exif) = exif::Reader::new().read_raw(raw.to_vec()) else {
        // Unparseable EXIF is common and harmless for everything else: no caption.
        return Ok(None);
    };
    let Some(field) = exif.get_field(exif::Tag::ImageDescription, exif::In::PRIMARY) else {
        return Ok(None);
    };
    match &field.value {
        exif::Value::Ascii(parts) => {
            let bytes: Vec<u8> = parts.concat();
            let bytes = bytes.strip_suffix(&[0]).unwrap_or(&bytes).to_vec();
            if bytes.iter().all(|&b| b == b' ' || b == 0) {
                return Ok(None);
            }
            String::from_utf8(bytes).map(Some).map_err(|_| {
                "its EXIF ImageDescription is not UTF-8 text; give --caption or --no-caption".into()
            })
        }
        _ => Err("its EXIF ImageDescription is not text; give --caption or --no-caption".into()),
    }
}

/// The `x-default` (else first) entry of the XMP packet's `dc:description`.
fn xmp_description(raw: &[u8]) -> Result<Option<String>, String> {
    const DC: &str = "http://purl.org/dc/elements/1.1/";
    const RDF: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#";
    let text = std::str::from_utf8(raw)
        .map_err(|_| "its XMP metadata is not UTF-8; give --caption or --no-caption".to_string())?;
    let Ok(doc) = roxmltree::Document::parse(text.trim_matches(char::from(0))) else {
        return Err(
            "its XMP metadata is not well-formed XML; give --caption or --no-caption".into(),
        );
    };
    let Some(description) = doc
        .descendants()
        .find(|n| n.has_tag_name((DC, "description")))
    else {
        return Ok(None);
    };
    let entries: Vec<_> = description
        .descendants()
        .filter(|n| n.has_tag_name((RDF, "li")))
        .collect();
    let default = entries.iter().find(|n| {
        n.attribute(("http://www.w3.org/XML/1998/namespace", "lang")) == Some("x-default")
    });
    let text: Option<String> = default
        .or(entries.first())
        .map(|n| {
            n.descendants()
                .filter(|d| d.is_text())
                .filter_map(|d| d.text())
                .collect()
        })
        .or_else(|| description.text().map(String::from));
    Ok(text.filter(|t| !t.trim().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xmp(inner: &str) -> String {
        format!(
            r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/">{inner}</rdf:Description></rdf:RDF></x:xmpmeta>"#
        )
    }

    #[test]
    fn xmp_description_prefers_x_default() {
        let packet = xmp(
            r#"<dc:description><rdf:Alt><rdf:li xml:lang="fr">Un chat</rdf:li><rdf:li xml:lang="x-default">A cat &amp; a dog</rdf:li></rdf:Alt></dc:description>"#,
        );
        assert_eq!(
            description(None, Some(packet.as_bytes()))
                .unwrap()
                .as_deref(),
            Some("A cat & a dog")
        );
        assert_eq!(description(None, Some(xmp("").as_bytes())).unwrap(), None);
    }

    #[test]
    fn bad_metadata_is_a_clear_error() {
        assert!(description(None, Some(&[0xff, 0xfe, 0x00]))
            .unwrap_err()
            .contains("not UTF-8"));
        assert!(description(None, Some(b"<x:xmpmeta"))
            .unwrap_err()
            .contains("XML"));
        let long = xmp(&format!(
            "<dc:description><rdf:Alt><rdf:li>{}</rdf:li></rdf:Alt></dc:description>",
            "word ".repeat(100)
        ));
        assert!(description(None, Some(long.as_bytes()))
            .unwrap_err()
            .contains("at most"));
    }
}
