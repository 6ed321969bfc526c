//! The `.mrg` container: a small fixed header followed by the entropy-coded
//! payload sections of one Mirage image.
//!
//! The byte layout is specified in `docs/format.md`; this crate is its only
//! implementation. Everything is little endian and at fixed offsets, so the
//! reader is a straight sequence of checks, each of which can fail with a
//! [`FormatError`] but never panic. The reader never allocates more than the
//! length of its input: section sizes are checked against the bytes actually
//! present before any buffer is created.

use thiserror::Error;

pub mod realism_map;
pub mod ultralow;

/// First four bytes of every `.mrg` file. The `0x1a` (Ctrl-Z) byte makes a
/// file shown with `type`/`cat` stop early instead of dumping binary noise.
pub const MAGIC: [u8; 4] = *b"MRG\x1a";

/// The container version this crate writes and the only one it reads.
pub const VERSION: u8 = 1;

/// Largest width or height accepted, on write and on read.
pub const MAX_DIMENSION: u32 = 16384;

/// Largest `width * height` accepted, on write and on read. Together with
/// [`MAX_DIMENSION`] this bounds what a decoder allocates for a file whose
/// header was corrupted or crafted.
pub const MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// Largest value of [`Header::rate`].
pub const RATE_MAX: u16 = 1000;

/// Largest number of payload sections in one container.
pub const MAX_SECTIONS: usize = 8;

/// Size of the part of the header that does not depend on the section count:
/// magic(4) version(1) model_id(8) width(4) height(4) rate(2) flags(1)
/// realism(1) decoder(1) section_count(1).
const FIXED_HEADER_SIZE: usize = 27;

/// Offset of the section count byte, which must be read before the rest of
/// the header can be located.
const SECTION_COUNT_OFFSET: usize = 26;

/// Bit of the flags byte that says whether [`Header::realism`] is set. The
/// other seven bits are reserved and must be zero so that a future version
/// can give them a meaning without old files becoming ambiguous.
const FLAG_REALISM: u8 = 0x01;

/// The image-level settings stored in the container header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Identifies the trained model (weights and entropy tables) the payload
    /// was coded with; a decoder must refuse a model it does not have.
    pub model_id: [u8; 8],
    /// Image width in pixels, `1..=MAX_DIMENSION`.
    pub width: u32,
    /// Image height in pixels, `1..=MAX_DIMENSION`.
    pub height: u32,
    /// Continuous rate setting the encoder used, `0..=RATE_MAX`.
    pub rate: u16,
    /// Suggested hallucination weight for the decoder, `0..=255` mapping to
    /// `0..=1`; `None` leaves the choice to the decoder.
    pub realism: Option<u8>,
    /// Which synthesis network to decode with: 0 is the default (MSE/realism)
    /// decoder; other values are reserved for future decoders. The container
    /// stores any value; it is the codec's job to refuse ones it lacks.
    pub decoder: u8,
}

/// A header plus its payload sections, in order.
///
/// The codec uses two sections (0: hyper-latent `z`, 1: latent `y`); the
/// container itself accepts `1..=MAX_SECTIONS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub header: Header,
    pub sections: Vec<Vec<u8>>,
}

/// Why a container could not be written or read.
///
/// Messages are written to read as one line after a `"mirage: "` prefix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("file is empty")]
    Empty,
    #[error("file is truncated ({actual} bytes, need {expected})")]
    Truncated { expected: u64, actual: u64 },
    #[error("not a Mirage file (bad magic)")]
    NotMirage,
    #[error("unsupported Mirage format version {0} (this build reads version {VERSION})")]
    UnsupportedVersion(u8),
    #[error("image width or height is zero")]
    ZeroDimension,
    #[error(
        "image dimensions {width}x{height} exceed the limits \
         ({MAX_DIMENSION} per side, {MAX_PIXELS} pixels)"
    )]
    DimensionsTooLarge { width: u32, height: u32 },
    #[error("rate {0} is out of range (0..={RATE_MAX})")]
    BadRate(u16),
    #[error("invalid header: {0}")]
    InvalidHeader(&'static str),
    #[error("section count {0} is out of range (1..={MAX_SECTIONS})")]
    BadSectionCount(usize),
    #[error("section {index} is {len} bytes, more than a container can hold")]
    SectionTooLarge { index: usize, len: usize },
    #[error("{part} checksum mismatch (file is corrupted)")]
    ChecksumMismatch { part: &'static str },
    #[error("file has {0} unexpected bytes after the last section")]
    TrailingData(u64),
    #[error("invalid section: {0}")]
    BadSection(String),
}

/// Number of bytes before the first payload byte in a container with
/// `section_count` sections, so the codec can report header overhead
/// separately from the payload.
pub fn header_size(section_count: usize) -> usize {
    // Each section has a u32 length; then the payload and header CRC32s.
    FIXED_HEADER_SIZE + 4 * section_count + 4 + 4
}

/// Serialises a container, checking the same limits that [`read`] enforces
/// so that every file written can be read back.
pub fn write(container: &Container) -> Result<Vec<u8>, FormatError> {
    let header = &container.header;
    validate_header(header)?;
    let sections = &container.sections;
    check_section_count(sections.len())?;
    for (index, section) in sections.iter().enumerate() {
        if u32::try_from(section.len()).is_err() {
            return Err(FormatError::SectionTooLarge {
                index,
                len: section.len(),
            });
        }
    }

    let header_len = header_size(sections.len());
    let payload_len: usize = sections.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(header_len + payload_len);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&header.model_id);
    out.extend_from_slice(&header.width.to_le_bytes());
    out.extend_from_slice(&header.height.to_le_bytes());
    out.extend_from_slice(&header.rate.to_le_bytes());
    match header.realism {
        Some(realism) => out.extend_from_slice(&[FLAG_REALISM, realism]),
        None => out.extend_from_slice(&[0, 0]),
    }
    out.push(header.decoder);
    // Cannot truncate: check_section_count limited it to MAX_SECTIONS.
    out.push(sections.len() as u8);
    for section in sections {
        out.extend_from_slice(&(section.len() as u32).to_le_bytes());
    }
    let mut payload_crc = crc32fast::Hasher::new();
    for section in sections {
        payload_crc.update(section);
    }
    out.extend_from_slice(&payload_crc.finalize().to_le_bytes());
    let header_crc = crc32fast::hash(&out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    debug_assert_eq!(out.len(), header_len);

    for section in sections {
        out.extend_from_slice(section);
    }
    Ok(out)
}

/// Rewrites both checksums of a would-be container in place, so that a fuzzer's or a
/// test's mutated bytes reach the checks behind them (header fields, section lengths,
/// the sections' own parsers). Bytes too short to hold a header are left alone.
pub fn recompute_checksums(bytes: &mut [u8]) {
    if bytes.len() < FIXED_HEADER_SIZE {
        return;
    }
    let section_count = usize::from(bytes[SECTION_COUNT_OFFSET]);
    let header_len = header_size(section_count);
    if check_section_count(section_count).is_err() || bytes.len() < header_len {
        return;
    }
    let payload_crc = crc32fast::hash(&bytes[header_len..]);
    bytes[header_len - 8..header_len - 4].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32fast::hash(&bytes[..header_len - 4]);
    bytes[header_len - 4..header_len].copy_from_slice(&header_crc.to_le_bytes());
}

/// Parses and fully validates a container.
///
/// Checks run in the order that gives the most useful error: identity first
/// (empty, magic, version), then enough length to hold the header, then the
/// header checksum (so a corrupted header is reported as corruption rather
/// than as a strange field value), then the field values, then the section
/// lengths against the bytes present, and finally the payload checksum.
pub fn read(bytes: &[u8]) -> Result<Container, FormatError> {
    if bytes.is_empty() {
        return Err(FormatError::Empty);
    }
    // A file shorter than the magic is still "ours" if it is a prefix of it;
    // anything else is foreign, which is the more useful thing to say.
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(FormatError::NotMirage);
    }
    require_len(bytes, MAGIC.len() + 1)?;
    // Checked before anything else is parsed: a future version may lay out
    // the rest of the header differently.
    let version = bytes[MAGIC.len()];
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }

    require_len(bytes, FIXED_HEADER_SIZE)?;
    let section_count = usize::from(bytes[SECTION_COUNT_OFFSET]);
    check_section_count(section_count)?;
    let header_len = header_size(section_count);
    require_len(bytes, header_len)?;

    let crc_offset = header_len - 4;
    if crc32fast::hash(&bytes[..crc_offset]) != le_u32(bytes, crc_offset) {
        return Err(FormatError::ChecksumMismatch { part: "header" });
    }

    let header = parse_header(bytes)?;

    let lengths_offset = FIXED_HEADER_SIZE;
    let lengths: Vec<usize> = (0..section_count)
        .map(|i| le_u32(bytes, lengths_offset + 4 * i) as usize)
        .collect();
    // Summed in u64 so that eight lengths near u32::MAX cannot overflow on
    // 32-bit targets.
    let declared: u64 = lengths.iter().map(|&len| len as u64).sum();
    let payload = &bytes[header_len..];
    let present = payload.len() as u64;
    if declared > present {
        return Err(FormatError::Truncated {
            expected: header_len as u64 + declared,
            actual: bytes.len() as u64,
        });
    }
    if declared < present {
        return Err(FormatError::TrailingData(present - declared));
    }
    let payload_crc_offset = crc_offset - 4;
    if crc32fast::hash(payload) != le_u32(bytes, payload_crc_offset) {
        return Err(FormatError::ChecksumMismatch { part: "payload" });
    }

    // Every length is now known to fit inside `payload`, so these slices are
    // in bounds and the copies total at most the input length.
    let mut sections = Vec::with_capacity(section_count);
    let mut start = 0;
    for len in lengths {
        sections.push(payload[start..start + len].to_vec());
        start += len;
    }
    Ok(Container { header, sections })
}

/// Reads the header fields; the caller has checked the length and checksum.
fn parse_header(bytes: &[u8]) -> Result<Header, FormatError> {
    let mut model_id = [0u8; 8];
    model_id.copy_from_slice(&bytes[5..13]);
    let flags = bytes[23];
    let realism_byte = bytes[24];
    if flags & !FLAG_REALISM != 0 {
        return Err(FormatError::InvalidHeader("reserved flag bits are set"));
    }
    let realism = if flags & FLAG_REALISM != 0 {
        Some(realism_byte)
    } else if realism_byte == 0 {
        None
    } else {
        // Rejected so that each header has exactly one byte representation.
        return Err(FormatError::InvalidHeader(
            "realism value present without its flag",
        ));
    };
    let header = Header {
        model_id,
        width: le_u32(bytes, 13),
        height: le_u32(bytes, 17),
        rate: u16::from_le_bytes([bytes[21], bytes[22]]),
        realism,
        decoder: bytes[25],
    };
    validate_header(&header)?;
    Ok(header)
}

/// The field-value rules shared by [`write`] and [`read`].
fn validate_header(header: &Header) -> Result<(), FormatError> {
    let (width, height) = (header.width, header.height);
    if width == 0 || height == 0 {
        return Err(FormatError::ZeroDimension);
    }
    if width > MAX_DIMENSION
        || height > MAX_DIMENSION
        || u64::from(width) * u64::from(height) > MAX_PIXELS
    {
        return Err(FormatError::DimensionsTooLarge { width, height });
    }
    if header.rate > RATE_MAX {
        return Err(FormatError::BadRate(header.rate));
    }
    Ok(())
}

fn check_section_count(count: usize) -> Result<(), FormatError> {
    if (1..=MAX_SECTIONS).contains(&count) {
        Ok(())
    } else {
        Err(FormatError::BadSectionCount(count))
    }
}

fn require_len(bytes: &[u8], needed: usize) -> Result<(), FormatError> {
    if bytes.len() < needed {
        return Err(FormatError::Truncated {
            expected: needed as u64,
            actual: bytes.len() as u64,
        });
    }
    Ok(())
}

/// Little-endian u32 at `at`; the caller has checked that it is in bounds.
fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[cfg(test)]
mod tests;
