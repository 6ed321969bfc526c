//! The sections of an ultra-low-bitrate file (header `decoder` = [`ULTRALOW_DECODER`]):
//! a grid of fixed-width codebook indices and an optional compressed caption.
//!
//! Both are plain data: the decoder reads the indices with nothing but their width,
//! so this part of the bitstream needs no entropy model. Both readers check lengths
//! exactly and never allocate more than a documented bound.

use crate::FormatError;
use std::io::{Read, Write};

/// The header's `decoder` value of an ultra-low-bitrate file.
pub const ULTRALOW_DECODER: u8 = 1;
/// Section 0: the index grid.
pub const INDEX_SECTION: usize = 0;
/// Section 1 (optional): the caption.
pub const CAPTION_SECTION: usize = 1;
/// Longest caption, in bytes of UTF-8 (a long sentence; COCO's captions are ~60).
pub const MAX_CAPTION_BYTES: usize = 256;

/// Packs indices of `bits` bits each, least significant bits first, row-major; the
/// unused bits of the last byte are zero.
pub fn pack_indices(indices: &[u32], bits: u32) -> Vec<u8> {
    let mut out = vec![0u8; (indices.len() * bits as usize).div_ceil(8)];
    let mut pos = 0usize;
    for &index in indices {
        debug_assert!(bits == 32 || index < 1 << bits);
        for b in 0..bits {
            if index >> b & 1 == 1 {
                out[pos / 8] |= 1 << (pos % 8);
            }
            pos += 1;
        }
    }
    out
}

/// The inverse of [`pack_indices`], for a grid of `count` cells. The section must be
/// exactly `ceil(count · bits / 8)` bytes with zero padding bits.
pub fn unpack_indices(bytes: &[u8], count: usize, bits: u32) -> Result<Vec<u32>, FormatError> {
    let expected = (count * bits as usize).div_ceil(8);
    if bytes.len() != expected {
        return Err(FormatError::BadSection(format!(
            "the index section has {} bytes, a grid of {count} cells of {bits} bits needs {expected}",
            bytes.len()
        )));
    }
    let bit = |pos: usize| (bytes[pos / 8] >> (pos % 8)) & 1;
    let used = count * bits as usize;
    if (used..expected * 8).any(|pos| bit(pos) != 0) {
        return Err(FormatError::BadSection(
            "the index section's padding bits are not zero".into(),
        ));
    }
    Ok((0..count)
        .map(|i| {
            (0..bits)
                .map(|b| (bit(i * bits as usize + b as usize) as u32) << b)
                .sum()
        })
        .collect())
}

/// Checks a caption: UTF-8 (a `&str` already is), at most [`MAX_CAPTION_BYTES`], no
/// control characters (a caption is one line of text).
pub fn check_caption(text: &str) -> Result<(), FormatError> {
    if text.len() > MAX_CAPTION_BYTES {
        return Err(FormatError::BadSection(format!(
            "the caption has {} bytes; at most {MAX_CAPTION_BYTES} are allowed",
            text.len()
        )));
    }
    if text.trim().is_empty() {
        return Err(FormatError::BadSection("the caption is empty".into()));
    }
    if text.chars().any(char::is_control) {
        return Err(FormatError::BadSection(
            "the caption contains control characters".into(),
        ));
    }
    Ok(())
}

/// A caption as its section: raw DEFLATE (RFC 1951) at the highest level.
pub fn compress_caption(text: &str) -> Result<Vec<u8>, FormatError> {
    check_caption(text)?;
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(text.as_bytes())
        .and_then(|_| encoder.finish())
        .map_err(|e| FormatError::BadSection(format!("compressing the caption: {e}")))
}

/// The caption of a section, refusing anything [`compress_caption`] would not write.
/// Inflates at most `MAX_CAPTION_BYTES + 1` bytes, so a crafted section cannot
/// expand into a large allocation.
pub fn decompress_caption(bytes: &[u8]) -> Result<String, FormatError> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(bytes)
        .take(MAX_CAPTION_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| FormatError::BadSection(format!("the caption section is corrupt: {e}")))?;
    let text = String::from_utf8(out)
        .map_err(|_| FormatError::BadSection("the caption is not UTF-8".into()))?;
    check_caption(&text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_round_trip_at_every_width() {
        for bits in [1u32, 6, 7, 10, 13] {
            let indices: Vec<u32> = (0..97u32).map(|i| (i * 7919) % (1 << bits)).collect();
            let bytes = pack_indices(&indices, bits);
            assert_eq!(bytes.len(), (97 * bits as usize).div_ceil(8));
            assert_eq!(unpack_indices(&bytes, 97, bits).unwrap(), indices);
        }
    }

    #[test]
    fn index_sections_of_the_wrong_size_or_padding_are_refused() {
        let bytes = pack_indices(&[5, 1, 3], 7);
        assert!(unpack_indices(&bytes[..2], 3, 7).is_err());
        assert!(unpack_indices(&[bytes.clone(), vec![0]].concat(), 3, 7).is_err());
        let mut dirty = bytes.clone();
        *dirty.last_mut().unwrap() |= 0x80;
        assert!(unpack_indices(&dirty, 3, 7).is_err());
    }

    #[test]
    fn captions_round_trip_and_bad_ones_are_refused() {
        let text = "A man riding a wave on top of a surfboard.";
        let bytes = compress_caption(text).unwrap();
        // A short sentence barely compresses, but DEFLATE costs at most a few bytes more
        // than the text; repetitive text shrinks.
        assert!(bytes.len() <= text.len() + 5, "{} bytes", bytes.len());
        let repetitive = "a red bus, a red bus, a red bus, a red bus, a red bus";
        let n = compress_caption(repetitive).unwrap().len();
        assert!(n < repetitive.len() * 2 / 3, "{n} bytes");
        assert_eq!(decompress_caption(&bytes).unwrap(), text);
        assert!(compress_caption(&"x".repeat(MAX_CAPTION_BYTES + 1)).is_err());
        assert!(compress_caption("two\nlines").is_err());
        assert!(compress_caption("  ").is_err());
        assert!(decompress_caption(&[0xff, 0x00, 0x12]).is_err());
        // A bomb: a long caption compresses to few bytes but must not be accepted.
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![b'a'; 1 << 20]).unwrap();
        assert!(decompress_caption(&encoder.finish().unwrap()).is_err());
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&[0xc3, 0x28]).unwrap();
        assert!(decompress_caption(&encoder.finish().unwrap()).is_err());
    }
}
