//! Quantised weights: the packed formats, their CPU twins, the GPU matrices that hold them, the
//! recipes that say which part of the model gets which format, and quantising a dense
//! checkpoint while loading (`load`: on the GPU, bit-identical to the CPU twin, or on the CPU).
//!
//! Formats (docs/QUANT.md has the measurements behind the choices):
//! - int8, symmetric: `w = d * q`, q in -127..=127, one f16 scale per group of columns or per row.
//! - int4, group-wise along the input dimension: scale only `w = d * (q - 8)`, or scale and
//!   offset `w = d * q + m`, q in 0..=15, f16 scale (and offset) per group.
//!
//! Codes are packed into u32 words along a row (4 int8 or 8 int4, lowest bits first); rows are
//! padded to a whole number of groups (a multiple of 32 columns) so every row starts on a 16-byte
//! boundary. Scales live in their own array: f16 per group for the symmetric formats, an
//! f16 (d, m) pair (one u32) per group with offsets.

pub(crate) mod cpu;
pub mod file;
mod gpu;
pub mod load;
pub mod measure;
pub mod report;
mod recipe;

pub use cpu::{pack_codes, unpack_codes, Packed};
pub use gpu::{QMatrix, QPart, Weight, WeightRef};
pub use load::{GpuQuantiser, QuantOn, Quantiser};
pub use recipe::{Format, Part, Recipe};

use crate::error::{Error, Result};

/// Columns in a chunk the kernels read at once (one 16-byte load of int4 codes); groups are multiples of it.
pub const CHUNK: usize = 32;

/// A packed integer format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QFormat {
    /// 4 or 8.
    pub bits: u32,
    /// Columns per scale, a multiple of 32; 0 = one scale per row (per output channel).
    pub group: usize,
    /// Scale and offset (asymmetric) instead of scale only. int4 only.
    pub zero: bool,
}

impl QFormat {
    pub const fn q8(group: usize) -> QFormat {
        QFormat { bits: 8, group, zero: false }
    }
    pub const fn q4(group: usize, zero: bool) -> QFormat {
        QFormat { bits: 4, group, zero }
    }

    /// Fails on combinations the kernels do not implement.
    pub fn validate(self) -> Result<QFormat> {
        let ok = matches!(self.bits, 4 | 8) && self.group.is_multiple_of(CHUNK) && !(self.zero && self.bits == 8) && self.group <= 1 << 20;
        if ok { Ok(self) } else { Err(Error::Invalid(format!("quantised format {self:?}: int4 or int8, group a multiple of {CHUNK} (0 = per row), offsets for int4 only"))) }
    }

    /// The layout of one row of `cols` columns.
    pub fn layout(self, cols: usize) -> QLayout {
        let padded = cols.max(1).div_ceil(CHUNK) * CHUNK;
        // A group never spans more than the (padded) row: short rows get one group.
        let group = if self.group == 0 { padded } else { self.group.min(padded) };
        let kp = cols.max(1).div_ceil(group) * group;
        let row_groups = kp / group;
        QLayout { group, kp, row_words: kp * self.bits as usize / 32, row_groups, row_scales: row_groups * (1 + self.zero as usize) }
    }

    /// Short name: `q8c` (per row), `q8g128`, `q4g64`, `q4g64z` (with offsets).
    pub fn name(self) -> String {
        match (self.bits, self.group) {
            (8, 0) => "q8c".into(),
            (b, g) => format!("q{b}g{g}{}", if self.zero { "z" } else { "" }),
        }
    }

    /// Parses `name`'s output.
    pub fn parse(s: &str) -> Result<QFormat> {
        let bad = || Error::Invalid(format!("quantised format `{s}`: expected q8c, q8gN, q4gN or q4gNz"));
        let (bits, rest) = match s.get(..2) {
            Some("q8") => (8, &s[2..]),
            Some("q4") => (4, &s[2..]),
            _ => return Err(bad()),
        };
        if bits == 8 && rest == "c" {
            return QFormat::q8(0).validate();
        }
        let rest = rest.strip_prefix('g').ok_or_else(bad)?;
        let (num, zero) = match rest.strip_suffix('z') {
            Some(n) => (n, true),
            None => (rest, false),
        };
        let group: usize = num.parse().map_err(|_| bad())?;
        if group == 0 {
            return Err(bad());
        }
        QFormat { bits, group, zero }.validate()
    }
}

impl std::fmt::Display for QFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Where a row's codes and scales sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QLayout {
    /// Columns per scale.
    pub group: usize,
    /// Columns per row after padding to whole groups.
    pub kp: usize,
    /// u32 words of codes per row.
    pub row_words: usize,
    pub row_groups: usize,
    /// f16 values per row in the scale array (groups, or 2 per group with offsets).
    pub row_scales: usize,
}

impl QLayout {
    /// Bytes of a [rows, cols] matrix: codes and scales.
    pub fn bytes(&self, rows: usize) -> usize {
        rows * (self.row_words * 4 + self.row_scales * 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_fail() {
        for f in [QFormat::q8(0), QFormat::q8(128), QFormat::q4(32, false), QFormat::q4(64, true)] {
            assert_eq!(QFormat::parse(&f.name()).unwrap(), f);
        }
        for bad in ["", "q8", "q4g", "q4g0", "q4g48", "q8g32z", "q5g32", "q4g64zz", "q4c"] {
            assert!(QFormat::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layouts_pad_rows_to_whole_groups() {
        let l = QFormat::q4(64, true).layout(100);
        assert_eq!((l.group, l.kp, l.row_words, l.row_groups, l.row_scales), (64, 128, 16, 2, 4));
        // A row shorter than the group gets one group of its padded length.
        let l = QFormat::q4(128, false).layout(32);
        assert_eq!((l.group, l.kp, l.row_words, l.row_scales), (32, 32, 4, 1));
        let l = QFormat::q8(0).layout(2048);
        assert_eq!((l.group, l.kp, l.row_words, l.row_scales), (2048, 2048, 512, 1));
        let l = QFormat::q8(32).layout(33);
        assert_eq!((l.group, l.kp, l.row_words, l.row_groups), (32, 64, 16, 2));
    }
}
