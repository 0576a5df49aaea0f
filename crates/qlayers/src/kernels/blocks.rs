//! How the K dimension is split into blocks: activations get one scale per row and block, weights one scale per
//! column and block (or per column). Weights and activations share the split.

use crate::error::{QuantError, Result};

/// Alignment of every block's stored length: 16 K values fill whole bytes at 2, 4 and 8 bits and whole 4-value lanes.
pub(crate) const K_ALIGN: usize = 16;

/// Longest block: keeps `sum((w - z) * x)` over a block inside i32 for 8-bit codes (255 * 127 * 32768 < 2^31).
pub const MAX_BLOCK: usize = 32768;

/// The split of `k` values into blocks of `block` (the last one may be shorter), each stored padded to [`K_ALIGN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KBlocks {
    /// Logical length of K.
    pub k: usize,
    /// Length of every block but possibly the last.
    pub block: usize,
    /// Number of blocks.
    pub count: usize,
    /// Stored length of a row: all blocks, each padded.
    pub padded_k: usize,
}

impl KBlocks {
    /// Splits `k` into blocks of `block` values; a block of `k` or more means one block per row.
    pub fn new(k: usize, block: usize) -> Result<Self> {
        if k == 0 {
            return Err(QuantError::InvalidScheme("a matrix with K = 0 cannot be quantized".into()));
        }
        let block = block.min(k);
        if block == 0 || block > MAX_BLOCK {
            return Err(QuantError::InvalidScheme(format!(
                "K block of {block} values: must be between 1 and {MAX_BLOCK}"
            )));
        }
        let count = k.div_ceil(block);
        if count > 1 && !block.is_multiple_of(K_ALIGN) {
            return Err(QuantError::InvalidScheme(format!(
                "K block of {block} values must be a multiple of {K_ALIGN} (or at least K = {k})"
            )));
        }
        let last = k - (count - 1) * block;
        Ok(Self { k, block, count, padded_k: (count - 1) * block + last.next_multiple_of(K_ALIGN) })
    }

    /// Start of block `g` in a stored row (equal to its start in the logical row).
    pub fn offset(&self, g: usize) -> usize {
        g * self.block
    }

    /// Logical length of block `g`.
    pub fn len(&self, g: usize) -> usize {
        if g + 1 == self.count {
            self.k - g * self.block
        } else {
            self.block
        }
    }

    /// Stored length of block `g`, a multiple of [`K_ALIGN`].
    pub fn padded_len(&self, g: usize) -> usize {
        self.len(g).next_multiple_of(K_ALIGN)
    }
}
