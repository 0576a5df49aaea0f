//! Token-embedding tables: f32 rows, or int8 codes with one scale per group of a row, dequantized as tokens
//! gather them (a small encoder's table is most of its bytes: 47 of MiniLM's 60 MB in f32).

use anyhow::{bail, Result};
use qlayers::{Bits, CodeRange, LinearScheme, Scheme};

use crate::loader::{LinearParams, LinearWeight, QuantLoader};
use qlayers::float_ops::rows::LayerNormParams;

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

/// The input embeddings of a BERT-style encoder: token rows plus position rows (from `offset`) plus the token-type
/// row, then a layer norm.
pub(crate) struct InputEmbeddings {
    /// `[vocab, hidden]`, f32 or int8 per the plan.
    pub words: EmbeddingTable,
    /// `[positions, hidden]`.
    pub positions: Vec<f32>,
    /// `[types, hidden]`, or empty for a model without token types (DistilBERT).
    pub token_types: Vec<f32>,
    /// The position of a sequence's first token (RoBERTa counts from `padding_idx + 1`).
    pub offset: usize,
    /// The layer norm over the sum.
    pub norm: LayerNormParams,
    /// Width of a row.
    pub width: usize,
}

/// The shape of [`InputEmbeddings`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct EmbeddingShape {
    pub vocab: usize,
    pub width: usize,
    pub positions: usize,
    /// Token types (0: the model has no token-type table).
    pub types: usize,
    /// See [`InputEmbeddings::offset`].
    pub offset: usize,
    pub eps: f64,
}

impl InputEmbeddings {
    /// Reads `{prefix}word_embeddings`, `position_embeddings`, `token_type_embeddings` (when `shape.types > 0`) and
    /// `LayerNorm` (`prefix` ends in `embeddings.`); the token table takes the plan's embedding scheme.
    pub(crate) fn load(loader: &QuantLoader, prefix: &str, shape: EmbeddingShape) -> Result<Self> {
        let EmbeddingShape { vocab, width, positions, types, offset, eps } = shape;
        if offset >= positions {
            bail!("a position offset of {offset} leaves none of the {positions} positions");
        }
        let table = |name: &str, rows: usize| -> Result<Vec<f32>> {
            Ok(loader.tensor(&format!("{prefix}{name}.weight"), &[rows, width])?.flatten_all()?.to_vec1()?)
        };
        let word_name = format!("{prefix}word_embeddings");
        let words =
            EmbeddingTable::from_params(&word_name, loader.table_params(&word_name, vocab, width)?, vocab, width)?;
        Ok(Self {
            words,
            positions: table("position_embeddings", positions)?,
            token_types: if types > 0 { table("token_type_embeddings", types)? } else { Vec::new() },
            offset,
            norm: super::encoder::layer_norm(loader, &format!("{prefix}LayerNorm"), width, eps)?,
            width,
        })
    }

    /// The longest sequence the position table covers.
    pub(crate) fn max_tokens(&self) -> usize {
        (self.positions.len() / self.width).saturating_sub(self.offset)
    }

    /// Token types the model knows (0 when it has none).
    fn type_count(&self) -> usize {
        self.token_types.len() / self.width
    }

    /// The normalized input rows of packed `sequences` (checked against the vocabulary and positions), `types`
    /// giving each token's type (every token is type 0 when `None`).
    pub(crate) fn embed(&self, sequences: &[&[u32]], types: Option<&[&[u32]]>) -> Result<Vec<f32>> {
        let h = self.width;
        if self.type_count() == 0 {
            // A model without a type table sees every token as type 0.
            super::encoder::no_token_types(types, "this model")?;
        }
        if let Some(types) = types.filter(|_| self.type_count() > 0) {
            let count = self.type_count();
            if types.len() != sequences.len() || types.iter().zip(sequences).any(|(t, s)| t.len() != s.len()) {
                bail!("token types must be given for every token of every sequence");
            }
            if let Some(&t) = types.iter().flat_map(|t| t.iter()).find(|&&t| t as usize >= count) {
                bail!("token type {t} is outside the model's {count} token types");
            }
        }
        let rows: usize = sequences.iter().map(|s| s.len()).sum();
        let mut hidden = vec![0f32; rows * h];
        let mut out = hidden.chunks_exact_mut(h);
        for (s, ids) in sequences.iter().enumerate() {
            for (pos, (&id, row)) in ids.iter().zip(out.by_ref()).enumerate() {
                self.words.row_into(id as usize, row);
                let position = &self.positions[(self.offset + pos) * h..][..h];
                row.iter_mut().zip(position).for_each(|(v, p)| *v += p);
                if self.type_count() > 0 {
                    let t = types.map_or(0, |t| t[s][pos] as usize);
                    row.iter_mut().zip(&self.token_types[t * h..][..h]).for_each(|(v, t)| *v += t);
                }
            }
        }
        self.norm.apply(&mut hidden, None);
        Ok(hidden)
    }

    /// Bytes of the tables and the norm.
    pub(crate) fn storage_bytes(&self) -> usize {
        self.words.storage_bytes() + 4 * (self.positions.len() + self.token_types.len() + 2 * self.width)
    }
}
