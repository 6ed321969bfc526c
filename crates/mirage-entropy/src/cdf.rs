//! Integer CDF tables: the only description of a probability distribution
//! the coder ever sees.

use crate::{EntropyError, PRECISION};

/// Sum of the frequencies of every table.
const TOTAL: u32 = 1 << PRECISION;

/// A quantized distribution over `len()` symbol slots.
///
/// Slot `i < len() - 1` stands for the value `offset + i`. The last slot is
/// the *escape*: any value outside the regular slots is coded as the escape
/// followed by the value itself in bypass coding (see `rans`), so every
/// `i32` can be coded with any table, just expensively when it is improbable.
///
/// Invariants (checked by both constructors): `cdf[0] == 0`,
/// `cdf[len()] == 1 << PRECISION`, strictly increasing (every slot has a
/// frequency of at least 1, otherwise it could not be coded at all), and
/// every regular value `offset + i` fits in an `i32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdfTable {
    cdf: Vec<u32>,
    offset: i32,
}

impl CdfTable {
    /// Quantizes the probabilities of the regular slots to a table; the
    /// escape slot receives the remaining mass `1 - sum(pmf)`.
    ///
    /// Method, in this fixed order so that equal inputs give equal tables:
    /// 1. Negative or NaN probabilities count as 0, values above 1 as 1.
    /// 2. Each slot gets `max(1, floor(p * 2^16 + 0.5))`.
    /// 3. If the total is short of `2^16`, the largest slot (the first one
    ///    on ties) receives the difference.
    /// 4. If it is over, the excess is taken from the slots in proportion to
    ///    how far each is above 1 (integer arithmetic, rounding down), and
    ///    what remains is taken one unit at a time from the slots with the
    ///    most left above 1 (first one on ties). Shrinking everything
    ///    proportionally, rather than taking it all from the largest slot,
    ///    keeps wide tables (thousands of slots, many clamped up to 1)
    ///    close to the true distribution.
    ///
    /// `f64` is acceptable here because tables are built from fixed inputs
    /// that the encoder and decoder share, and these steps use only IEEE
    /// basic operations, which give the same result on every machine.
    ///
    /// # Panics
    /// If `pmf.len() + 1 > 1 << PRECISION` (not every slot could get a
    /// frequency of 1), or if `offset + pmf.len() - 1` overflows `i32`.
    pub fn from_pmf(pmf: &[f64], offset: i32) -> CdfTable {
        let slots = pmf.len() + 1;
        assert!(
            slots <= TOTAL as usize,
            "a table has at most {TOTAL} slots, got {slots}"
        );
        assert!(
            regular_values_fit(offset, slots),
            "regular values of a table must fit in i32"
        );

        let mut probabilities: Vec<f64> = pmf.iter().map(|&p| clamp_probability(p)).collect();
        let mut regular_mass = 0.0;
        for &p in &probabilities {
            regular_mass += p;
        }
        probabilities.push(clamp_probability(1.0 - regular_mass));

        let scale = f64::from(TOTAL);
        let mut freqs: Vec<u32> = probabilities
            .iter()
            // p <= 1, so the result is at most TOTAL and the cast is exact.
            .map(|&p| ((p * scale + 0.5).floor() as u32).max(1))
            .collect();

        let sum: u64 = freqs.iter().map(|&f| u64::from(f)).sum();
        let total = u64::from(TOTAL);
        if sum < total {
            let largest = index_of_largest(&freqs);
            freqs[largest] += (total - sum) as u32;
        } else if sum > total {
            remove_excess(&mut freqs, sum - total);
        }

        let mut cdf = Vec::with_capacity(slots + 1);
        let mut running = 0;
        cdf.push(running);
        for f in freqs {
            running += f;
            cdf.push(running);
        }
        debug_assert_eq!(running, TOTAL);
        CdfTable { cdf, offset }
    }

    /// Validates a stored table, e.g. one shipped in a model file.
    pub fn from_cdf(cdf: Vec<u32>, offset: i32) -> Result<CdfTable, EntropyError> {
        if cdf.len() < 2 {
            return Err(EntropyError::InvalidTable("fewer than two CDF entries"));
        }
        if cdf[0] != 0 {
            return Err(EntropyError::InvalidTable("CDF does not start at 0"));
        }
        if cdf[cdf.len() - 1] != TOTAL {
            return Err(EntropyError::InvalidTable("CDF does not end at 1 << 16"));
        }
        if cdf.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err(EntropyError::InvalidTable("CDF is not strictly increasing"));
        }
        if !regular_values_fit(offset, cdf.len() - 1) {
            return Err(EntropyError::InvalidTable("regular values overflow i32"));
        }
        Ok(CdfTable { cdf, offset })
    }

    /// The cumulative frequencies, `len() + 1` entries from 0 to `1 << 16`.
    pub fn cdf(&self) -> &[u32] {
        &self.cdf
    }

    /// The value of slot 0.
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// Number of slots, including the escape slot.
    // A table always has its escape slot, so an `is_empty` would always be
    // false and only add noise.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.cdf.len() - 1
    }

    pub(crate) fn escape_slot(&self) -> usize {
        self.len() - 1
    }

    /// The regular slot coding `value`, or `None` if it must be escaped.
    pub(crate) fn regular_slot(&self, value: i32) -> Option<usize> {
        // i64 because `value - offset` can overflow i32.
        let relative = i64::from(value) - i64::from(self.offset);
        let regular = self.escape_slot() as i64;
        (0..regular)
            .contains(&relative)
            .then_some(relative as usize)
    }

    /// The value of a regular slot; cannot overflow by the table invariant.
    pub(crate) fn value_of(&self, slot: usize) -> i32 {
        self.offset + slot as i32
    }

    /// `(start, frequency)` of a slot, as the rANS update needs them.
    pub(crate) fn range(&self, slot: usize) -> (u32, u32) {
        (self.cdf[slot], self.cdf[slot + 1] - self.cdf[slot])
    }

    /// The slot whose interval `[cdf[s], cdf[s + 1])` contains `cumulative`;
    /// `cumulative` must be below `1 << PRECISION`.
    pub(crate) fn slot_containing(&self, cumulative: u32) -> usize {
        // Counts the upper bounds cdf[1..] that are <= cumulative, which is
        // exactly the index of the slot whose upper bound is the first one
        // above it.
        self.cdf[1..].partition_point(|&upper| upper <= cumulative)
    }
}

fn clamp_probability(p: f64) -> f64 {
    // Written so that NaN (for which every comparison is false) becomes 0.
    if p > 0.0 {
        p.min(1.0)
    } else {
        0.0
    }
}

/// True if the regular values `offset ..= offset + slots - 2` fit in i32.
fn regular_values_fit(offset: i32, slots: usize) -> bool {
    let regular = slots.saturating_sub(1) as i64;
    regular == 0 || i64::from(offset) + regular - 1 <= i64::from(i32::MAX)
}

fn index_of_largest(freqs: &[u32]) -> usize {
    let mut best = 0;
    for (i, &f) in freqs.iter().enumerate() {
        if f > freqs[best] {
            best = i;
        }
    }
    best
}

/// Step 4 of [`CdfTable::from_pmf`]. `excess` never exceeds the total
/// amount above 1 because the slot count is at most `2^16`.
fn remove_excess(freqs: &mut [u32], excess: u64) {
    let spare_total: u64 = freqs.iter().map(|&f| u64::from(f - 1)).sum();
    debug_assert!(excess <= spare_total);
    let mut remaining = excess;
    for f in freqs.iter_mut() {
        // Rounds down, so the sum of all takes never exceeds `excess`.
        let take = excess * u64::from(*f - 1) / spare_total;
        *f -= take as u32;
        remaining -= take;
    }

    let mut order: Vec<usize> = (0..freqs.len()).collect();
    // Stable sort: equal frequencies keep their index order.
    order.sort_by(|&a, &b| freqs[b].cmp(&freqs[a]));
    while remaining > 0 {
        for &i in &order {
            if remaining == 0 {
                break;
            }
            if freqs[i] > 1 {
                freqs[i] -= 1;
                remaining -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frequencies(table: &CdfTable) -> Vec<u32> {
        table.cdf().windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[test]
    fn from_pmf_keeps_every_slot_codable() {
        let pmf = [0.5, 0.5 - 1e-12, 1e-12, 0.0];
        let table = CdfTable::from_pmf(&pmf, -2);
        assert_eq!(table.len(), 5);
        assert_eq!(table.offset(), -2);
        let freqs = frequencies(&table);
        assert!(freqs.iter().all(|&f| f >= 1));
        assert_eq!(freqs.iter().sum::<u32>(), TOTAL);
        assert!(CdfTable::from_cdf(table.cdf().to_vec(), -2).is_ok());
    }

    #[test]
    fn from_pmf_gives_escape_the_tail_mass() {
        let table = CdfTable::from_pmf(&[0.25, 0.25], 0);
        assert_eq!(frequencies(&table), vec![16384, 16384, 32768]);
    }

    #[test]
    fn from_pmf_tolerates_garbage_probabilities() {
        let table = CdfTable::from_pmf(&[f64::NAN, -1.0, 7.0, f64::INFINITY], 0);
        let freqs = frequencies(&table);
        assert_eq!(freqs.iter().sum::<u32>(), TOTAL);
        assert!(freqs.iter().all(|&f| f >= 1));
    }

    #[test]
    fn from_pmf_handles_many_clamped_slots() {
        // 60000 slots of tiny mass each get clamped up to 1 and force a large
        // excess that the few big slots must absorb.
        let mut pmf = vec![1e-9; 60_000];
        pmf[0] = 0.6;
        pmf[1] = 0.4;
        let table = CdfTable::from_pmf(&pmf, 0);
        let freqs = frequencies(&table);
        assert_eq!(freqs.iter().sum::<u32>(), TOTAL);
        assert!(freqs.iter().all(|&f| f >= 1));
        assert!(freqs[0] > freqs[1]);
    }

    #[test]
    fn from_pmf_accepts_the_largest_table() {
        let pmf = vec![1.0 / 65535.0; (TOTAL - 1) as usize];
        let table = CdfTable::from_pmf(&pmf, 0);
        assert!(frequencies(&table).iter().all(|&f| f == 1));
    }

    #[test]
    fn from_cdf_rejects_invalid_tables() {
        let bad = [
            vec![],
            vec![0],
            vec![1, TOTAL],
            vec![0, 100],
            vec![0, 100, 100, TOTAL],
            vec![0, 200, 100, TOTAL],
        ];
        for cdf in bad {
            assert!(CdfTable::from_cdf(cdf.clone(), 0).is_err(), "{cdf:?}");
        }
        assert!(CdfTable::from_cdf(vec![0, 1, 2, TOTAL], i32::MAX).is_err());
        assert!(CdfTable::from_cdf(vec![0, 1, 2, TOTAL], i32::MAX - 1).is_ok());
        assert!(CdfTable::from_cdf(vec![0, TOTAL], i32::MAX).is_ok());
    }

    #[test]
    fn slot_lookup_matches_intervals() {
        let table = CdfTable::from_cdf(vec![0, 10, 11, 40000, TOTAL], 0).unwrap();
        for c in [0, 9, 10, 11, 39999, 40000, TOTAL - 1] {
            let slot = table.slot_containing(c);
            assert!(table.cdf()[slot] <= c && c < table.cdf()[slot + 1], "{c}");
        }
    }
}
