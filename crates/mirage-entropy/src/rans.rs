//! Range asymmetric numeral systems (rANS) over [`CdfTable`]s.
//!
//! # Stream layout
//!
//! The coder keeps a 32-bit state `x` normalised to `[L, 256 * L)` with
//! `L = 2^23`, and moves whole bytes between the state and the stream. A
//! stream is:
//!
//! ```text
//! | final encoder state: u32 little endian | renormalisation bytes ... |
//! ```
//!
//! The decoder loads the state from the first 4 bytes, then for each symbol
//! reads the slot from the low 16 bits of the state, updates the state, and
//! pulls bytes (in stream order) while the state is below `L`. rANS is last
//! in, first out, so the encoder processes symbols in reverse and builds the
//! stream backwards; that lets the decoder run forwards.
//!
//! The encoder starts from state `L`, so a correct decoder ends at `L` with
//! every byte consumed. Checking both catches most corruption and all
//! truncation, in addition to the checks made along the way.
//!
//! # Escapes
//!
//! A value outside a table's regular slots is coded as the table's escape
//! slot followed by the value in *bypass* coding: uniform probabilities over
//! `2^k` outcomes, coded through the same rANS state (a slot of frequency 1
//! at precision `k`). The value is zigzag mapped to a `u32`
//! (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...) so any `i32` can be escaped. Let
//! `n` be the bit length of the zigzag value `z` (0 for `z = 0`):
//!
//! 1. `n` as a 6-bit bypass field (`0..=32`; anything larger is an error),
//! 2. the `n - 1` bits of `z` below its leading 1 (which is implied), in
//!    chunks of at most 16 bits, least significant chunk first.
//!
//! Escapes are rare by construction (the escape slot carries only the tail
//! mass), so this favours simplicity over a few bits.

use crate::cdf::CdfTable;
use crate::{EntropyError, PRECISION};

/// Lower bound of the normalised state interval `[RANS_L, RANS_L << 8)`.
/// With 16-bit precision this leaves 7 bits of headroom, so a decode step
/// never needs more than two input bytes.
const RANS_L: u32 = 1 << 23;

/// Width of the bypass field holding an escaped value's bit length.
const ESCAPE_LENGTH_BITS: u32 = 6;

/// Largest bypass chunk: bypass coding at `k` bits needs `k <= PRECISION`
/// to keep the same renormalisation bounds as regular symbols.
const BYPASS_CHUNK_BITS: u32 = 16;

/// Codes `symbols[i]` with `tables[indexes[i]]` for every `i`.
pub fn encode(
    symbols: &[i32],
    indexes: &[usize],
    tables: &[CdfTable],
) -> Result<Vec<u8>, EntropyError> {
    if symbols.len() != indexes.len() {
        return Err(EntropyError::LengthMismatch {
            symbols: symbols.len(),
            indexes: indexes.len(),
        });
    }
    let mut encoder = Encoder::new(symbols.len());
    for (position, (&value, &index)) in symbols.iter().zip(indexes).enumerate().rev() {
        let table = table_at(tables, position, index)?;
        match table.regular_slot(value) {
            Some(slot) => {
                let (start, freq) = table.range(slot);
                encoder.put(start, freq, PRECISION);
            }
            None => {
                // Pushed before the escape slot so that the decoder, which
                // reads in the opposite order, sees the escape slot first.
                encoder.put_escaped_value(value);
                let (start, freq) = table.range(table.escape_slot());
                encoder.put(start, freq, PRECISION);
            }
        }
    }
    Ok(encoder.finish())
}

/// Decodes one symbol per entry of `indexes`, symbol `i` with
/// `tables[indexes[i]]`.
///
/// Never panics and always terminates, whatever `data` holds: corrupted or
/// truncated input gives an error or, rarely, wrong symbols.
pub fn decode(
    data: &[u8],
    indexes: &[usize],
    tables: &[CdfTable],
) -> Result<Vec<i32>, EntropyError> {
    let mut stream = StreamDecoder::new(data)?;
    let symbols = stream.decode(indexes, tables)?;
    stream.finish()?;
    Ok(symbols)
}

/// A stream decoded in several calls, for context models whose tables depend on
/// symbols decoded earlier in the same stream: the encoder codes everything with one
/// [`encode`], the decoder asks for the symbols a few at a time, in the same order.
pub struct StreamDecoder<'a> {
    decoder: Decoder<'a>,
    decoded: usize,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(data: &'a [u8]) -> Result<StreamDecoder<'a>, EntropyError> {
        Ok(StreamDecoder {
            decoder: Decoder::new(data)?,
            decoded: 0,
        })
    }

    /// The next `indexes.len()` symbols, symbol `i` with `tables[indexes[i]]`.
    pub fn decode(
        &mut self,
        indexes: &[usize],
        tables: &[CdfTable],
    ) -> Result<Vec<i32>, EntropyError> {
        let decoder = &mut self.decoder;
        let mut symbols = Vec::with_capacity(indexes.len());
        for (i, &index) in indexes.iter().enumerate() {
            let table = table_at(tables, self.decoded + i, index)?;
            let slot = table.slot_containing(decoder.peek(PRECISION));
            let (start, freq) = table.range(slot);
            decoder.advance(start, freq, PRECISION)?;
            let value = if slot == table.escape_slot() {
                let value = decoder.get_escaped_value()?;
                // The encoder escapes only values without a regular slot; any
                // other escaped value can only come from corruption.
                if table.regular_slot(value).is_some() {
                    return Err(EntropyError::BadEscape);
                }
                value
            } else {
                table.value_of(slot)
            };
            symbols.push(value);
        }
        self.decoded += indexes.len();
        Ok(symbols)
    }

    /// Checks that the stream ended exactly where the encoder's did.
    pub fn finish(self) -> Result<(), EntropyError> {
        self.decoder.finish()
    }
}

fn table_at(tables: &[CdfTable], position: usize, index: usize) -> Result<&CdfTable, EntropyError> {
    tables.get(index).ok_or(EntropyError::IndexOutOfRange {
        position,
        index,
        tables: tables.len(),
    })
}

fn zigzag(value: i32) -> u32 {
    ((value << 1) ^ (value >> 31)) as u32
}

fn unzigzag(z: u32) -> i32 {
    ((z >> 1) as i32) ^ -((z & 1) as i32)
}

/// `(shift, bits)` of each bypass chunk holding the `payload_bits` low bits
/// of an escaped value, in decoding order.
fn escape_chunks(payload_bits: u32) -> impl DoubleEndedIterator<Item = (u32, u32)> {
    (0..payload_bits)
        .step_by(BYPASS_CHUNK_BITS as usize)
        .map(move |shift| (shift, (payload_bits - shift).min(BYPASS_CHUNK_BITS)))
}

struct Encoder {
    /// The stream in reverse: bytes are pushed in the order the encoder
    /// emits them and the whole buffer is reversed once at the end.
    reversed: Vec<u8>,
    state: u32,
}

impl Encoder {
    fn new(symbols: usize) -> Encoder {
        Encoder {
            // A guess that avoids most regrowth for typical latents.
            reversed: Vec::with_capacity(symbols / 2 + 8),
            state: RANS_L,
        }
    }

    /// Encodes the interval `[start, start + freq)` out of `2^bits`.
    fn put(&mut self, start: u32, freq: u32, bits: u32) {
        // Emit low bytes until encoding cannot leave [L, 256 L). The bound is
        // at most 2^15 * 2^16 = 2^31, so it fits in u32.
        let limit = ((RANS_L >> bits) << 8) * freq;
        while self.state >= limit {
            self.reversed.push(self.state as u8);
            self.state >>= 8;
        }
        self.state = ((self.state / freq) << bits) + (self.state % freq) + start;
    }

    fn put_escaped_value(&mut self, value: i32) {
        let z = zigzag(value);
        let length = u32::BITS - z.leading_zeros();
        let payload_bits = length.saturating_sub(1);
        for (shift, bits) in escape_chunks(payload_bits).rev() {
            let chunk = (z >> shift) & ((1 << bits) - 1);
            self.put(chunk, 1, bits);
        }
        self.put(length, 1, ESCAPE_LENGTH_BITS);
    }

    fn finish(mut self) -> Vec<u8> {
        // Pushed most significant byte first so that, once reversed, the
        // stream starts with the state in little-endian order.
        self.reversed.extend_from_slice(&self.state.to_be_bytes());
        self.reversed.reverse();
        self.reversed
    }
}

struct Decoder<'a> {
    data: &'a [u8],
    position: usize,
    state: u32,
}

impl<'a> Decoder<'a> {
    fn new(data: &'a [u8]) -> Result<Decoder<'a>, EntropyError> {
        let Some(&[b0, b1, b2, b3]) = data.get(..4) else {
            return Err(EntropyError::Truncated);
        };
        let state = u32::from_le_bytes([b0, b1, b2, b3]);
        // Every state the encoder can finish in is normalised; rejecting the
        // rest also guarantees the decoder's own state stays in range.
        if !(RANS_L..RANS_L << 8).contains(&state) {
            return Err(EntropyError::BadInitialState);
        }
        Ok(Decoder {
            data,
            position: 4,
            state,
        })
    }

    /// The cumulative value selecting the next slot at precision `bits`.
    fn peek(&self, bits: u32) -> u32 {
        self.state & ((1 << bits) - 1)
    }

    /// Removes the interval `[start, start + freq)` that `peek` selected.
    fn advance(&mut self, start: u32, freq: u32, bits: u32) -> Result<(), EntropyError> {
        self.state = freq * (self.state >> bits) + self.peek(bits) - start;
        // The state is now at least 2^(23 - bits) >= 2^7, so this loop reads
        // at most two bytes and always terminates.
        while self.state < RANS_L {
            let &byte = self
                .data
                .get(self.position)
                .ok_or(EntropyError::Truncated)?;
            self.position += 1;
            self.state = (self.state << 8) | u32::from(byte);
        }
        Ok(())
    }

    /// Reads `bits` bits of bypass-coded data.
    fn get_bits(&mut self, bits: u32) -> Result<u32, EntropyError> {
        let value = self.peek(bits);
        self.advance(value, 1, bits)?;
        Ok(value)
    }

    fn get_escaped_value(&mut self) -> Result<i32, EntropyError> {
        let length = self.get_bits(ESCAPE_LENGTH_BITS)?;
        if length > u32::BITS {
            return Err(EntropyError::BadEscape);
        }
        if length == 0 {
            return Ok(0);
        }
        let payload_bits = length - 1;
        let mut z = 1 << payload_bits;
        for (shift, bits) in escape_chunks(payload_bits) {
            z |= self.get_bits(bits)? << shift;
        }
        Ok(unzigzag(z))
    }

    fn finish(self) -> Result<(), EntropyError> {
        let unread = self.data.len() - self.position;
        if unread != 0 {
            return Err(EntropyError::TrailingBytes(unread));
        }
        if self.state != RANS_L {
            return Err(EntropyError::FinalStateMismatch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_round_trips_extremes() {
        for v in [0, 1, -1, 2, -2, i32::MAX, i32::MIN, 123_456, -654_321] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(i32::MIN), u32::MAX);
    }

    #[test]
    fn escape_chunks_cover_the_payload() {
        assert_eq!(escape_chunks(0).count(), 0);
        assert_eq!(escape_chunks(5).collect::<Vec<_>>(), vec![(0, 5)]);
        assert_eq!(escape_chunks(16).collect::<Vec<_>>(), vec![(0, 16)]);
        assert_eq!(
            escape_chunks(31).collect::<Vec<_>>(),
            vec![(0, 16), (16, 15)]
        );
    }

    #[test]
    fn empty_stream_is_just_the_initial_state() {
        let bytes = encode(&[], &[], &[]).unwrap();
        assert_eq!(bytes, RANS_L.to_le_bytes());
        assert_eq!(decode(&bytes, &[], &[]).unwrap(), Vec::<i32>::new());
    }
}
