//! Token-embedding tables: f32 rows, or int8 codes with one scale per group of a row, dequantized as tokens
//! gather them (a small encoder's table is most of its bytes: 47 of MiniLM's 60 MB in f32).

use anyhow::{bail, Result};
use qlayers::{Bits, CodeRange, LinearScheme, Scheme};

use crate::loader::{LinearParams, LinearWeight};

/// One embedding table of `rows` rows of `width` values.
pub(crate) enum EmbeddingTable {
    /// Rows of floats, row-major.
    F32 { values: Vec<f32>, width: usize },
    /// Symmetric int8 codes, row-major, and `scales[row * groups + j / group]` for value `j` of a row.
    Int8 { codes: Vec<i8>, scales: Vec<f32>, width: usize, group: usize, groups: usize },
}

impl EmbeddingTable {
    /// The table `name` as [`crate::loader::QuantLoader::table_params`] read it (`[rows, width]`).
    pub(crate) fn from_params(name: &str, params: LinearParams, rows: usize, width: usize) -> Result<Self> {
        match params.weight {
            LinearWeight::Float(t) => Ok(Self::F32 { values: t.flatten_all()?.to_vec1()?, width }),
            LinearWeight::Quantized(q) => {
                let group = match *q.scheme() {
                    Scheme::Linear(LinearScheme {
                        bits: Bits::B8,
                        range: CodeRange::Signed,
                        granularity: qlayers::Granularity::PerGroup { size },
                        ..
                    }) if q.zero_points().iter().all(|&z| z == 0) => size,
                    _ => bail!("{name}: an embedding table is f32 or symmetric int8 per group, not {}", params.scheme),
                };
                let groups = width.div_ceil(group);
                if q.shape() != [rows, width] || q.scales().len() != rows * groups {
                    bail!("{name}: codes of shape {:?} do not make a [{rows}, {width}] table", q.shape());
                }
                let codes = q.codes().into_iter().map(|c| c as i8).collect();
                Ok(Self::Int8 { codes, scales: q.scales().to_vec(), width, group, groups })
            }
        }
    }

    /// Writes row `id` (in range: the caller checked it against the vocabulary) into `out` (`width` long).
    #[inline]
    pub(crate) fn row_into(&self, id: usize, out: &mut [f32]) {
        match self {
            Self::F32 { values, width } => out.copy_from_slice(&values[id * width..][..*width]),
            Self::Int8 { codes, scales, width, group, groups } => {
                let codes = &codes[id * width..][..*width];
                let scales = &scales[id * groups..][..*groups];
                for ((out, codes), &scale) in out.chunks_mut(*group).zip(codes.chunks(*group)).zip(scales) {
                    out.iter_mut().zip(codes).for_each(|(o, &c)| *o = f32::from(c) * scale);
                }
            }
        }
    }

    /// Bytes the table takes in memory.
    pub(crate) fn storage_bytes(&self) -> usize {
        match self {
            Self::F32 { values, .. } => 4 * values.len(),
            Self::Int8 { codes, scales, .. } => codes.len() + 4 * scales.len(),
        }
    }
}
