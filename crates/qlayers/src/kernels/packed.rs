//! Integer weights repacked once into the micro-kernels' panel layout.
//!
//! Weights are `[n, k]` (PyTorch's Linear layout). Columns of the output (rows of the weight) are grouped into
//! panels of `nr` columns. Inside a panel, each step of 4 K values stores `nr * 4` bytes: for every column, its
//! 4 consecutive codes. At 4 bits two consecutive steps share those bytes (low nibble first), at 2 bits four do.
//! Each panel carries, per parameter block, `nr` scales and `nr` zero offsets (`zero_point - WIDE_OFFSET` for 8-bit codes),
//! and `nr` minimums when the weights have them. Per-block scales and minimums may be kept in f16 (as ggml's formats
//! keep theirs): at batch 1 the bytes read set the pace, and a scale and a minimum per 32 4-bit codes are otherwise a
//! third of them.
//!
//! 4-bit codes may index a 16-entry table of 8-bit codes (codebook schemes): the kernel unpacks them as usual, looks
//! them up with one byte shuffle, and multiplies the 8-bit codes on the 8-bit path. The panel then stores the table
//! (XORed as 8-bit codes are) and zero offsets as for 8-bit codes.

use super::aligned::CacheAligned;
use super::blocks::KBlocks;
use super::isa::Isa;
use crate::error::{QuantError, Result};
use crate::quant::{check_stored_scales, fits_f16, Bits};

/// Quantized weights of an `[n, k]` matrix in a form every kernel accepts: unsigned codes and their parameters.
///
/// The matrix is `w[i][j] ≈ (c - zero_points[p]) * scales[p] + mins[p]` where `c` is `codes[i][j]`, or
/// `lookup[codes[i][j]]` with a table, and `p` indexes the row's parameter slot: one per row (`per_block = false`)
/// or one per row and K block (`per_block = true`).
#[derive(Debug, Clone, Copy)]
pub struct WeightCodes<'a> {
    /// Output features (rows of the weight).
    pub n: usize,
    /// Input features (columns of the weight).
    pub k: usize,
    /// Bit width of the codes.
    pub bits: Bits,
    /// K block length shared by weights and activations (activations get one scale per row and block).
    pub block: usize,
    /// Whether scales and zero points are per row and block (else per row).
    pub per_block: bool,
    /// Unsigned codes, `n * k`, row-major, each below `2^bits`.
    pub codes: &'a [u8],
    /// `n` or `n * blocks` scales.
    pub scales: &'a [f32],
    /// `n` or `n * blocks` zero points in `[0, 2^bits)`, or in `[0, 256)` with a lookup table.
    pub zero_points: &'a [i32],
    /// `n * blocks` float minimums (per-block parameters only), or empty when the weights have none.
    pub mins: &'a [f32],
    /// Keep per-block scales and minimums in f16 (rounded to nearest), when every one fits its range; otherwise, or
    /// for per-row scales, they stay f32.
    pub half_params: bool,
    /// For 4-bit codes only: the unsigned 8-bit code each 4-bit code stands for (a codebook's levels plus 128).
    pub lookup: Option<&'a [u8; 16]>,
}

/// Weights in the panel layout of one kernel level.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    pub(crate) isa: Isa,
    pub(crate) n: usize,
    pub(crate) bits: Bits,
    pub(crate) blocks: KBlocks,
    pub(crate) per_block: bool,
    /// Columns per panel.
    pub(crate) nr: usize,
    /// Code bytes of one panel.
    pub(crate) panel_bytes: usize,
    /// Panels, one after another, starting on a cache line so that vector loads never split lines.
    pub(crate) codes: CacheAligned,
    /// `[panel][param block][nr]` scales (0 for padding columns).
    pub(crate) scales: Vec<f32>,
    /// `[panel][param block][nr]` zero offsets; empty when they are all equal (see `uniform_zero_offset`).
    pub(crate) zero_offsets: Vec<i16>,
    /// The zero offset of every column and block when they are all equal (symmetric weights).
    pub(crate) uniform_zero_offset: Option<i32>,
    /// `[panel][param block][nr]` minimums (0 for padding columns); empty when the weights have none or they are
    /// kept in f16.
    pub(crate) mins: Vec<f32>,
    /// `scales` as f16 bits, when per-block parameters are kept in f16 (`scales` is then empty).
    pub(crate) half_scales: Vec<u16>,
    /// `mins` as f16 bits, when per-block parameters are kept in f16 (`mins` is then empty).
    pub(crate) half_mins: Vec<u16>,
    /// The 8-bit codes 4-bit codes stand for, XORed with the level's `wide_xor`, when the weights have a table.
    pub(crate) lookup: Option<[u8; 16]>,
    /// A factor per input channel that each input row is multiplied by before it is quantized (SmoothQuant's
    /// `1 / s`), when the weights have one.
    pub(crate) input_scale: Option<Vec<f32>>,
    /// The calibrated step activations are quantized with (static W8A8), or `None` for per-block dynamic scales.
    pub(crate) activation_step: Option<f32>,
}

impl PackedWeights {
    /// Repacks `w` for the micro-kernels of `isa` (which must be supported by this CPU).
    pub fn new(isa: Isa, w: &WeightCodes<'_>) -> Result<Self> {
        if !isa.is_supported() {
            return Err(QuantError::InvalidScheme(format!("kernel level {isa} is not supported by this CPU")));
        }
        let blocks = KBlocks::new(w.k, w.block)?;
        let param_blocks = if w.per_block { blocks.count } else { 1 };
        let expect = |what, expected: usize, got: usize| {
            if expected == got {
                Ok(())
            } else {
                Err(QuantError::ParamCount { what, expected, got })
            }
        };
        expect("weight codes", w.n * w.k, w.codes.len())?;
        expect("weight scales", w.n * param_blocks, w.scales.len())?;
        expect("weight zero points", w.n * param_blocks, w.zero_points.len())?;
        if !w.mins.is_empty() {
            if !w.per_block {
                return Err(QuantError::InvalidScheme("weight minimums need per-block parameters".into()));
            }
            expect("weight minimums", w.n * param_blocks, w.mins.len())?;
            if let Some((index, &value)) = w.mins.iter().enumerate().find(|(_, m)| !m.is_finite()) {
                return Err(QuantError::NonFinite { what: "weight minimums", index, value });
            }
        }
        if w.lookup.is_some() && w.bits != Bits::B4 {
            return Err(QuantError::InvalidScheme(format!("a lookup table needs 4-bit codes, not {}", w.bits.count())));
        }
        let levels = 1i32 << w.bits.count();
        if let Some((index, &value)) = w.codes.iter().enumerate().find(|(_, c)| i32::from(**c) >= levels) {
            return Err(QuantError::CodeOutOfRange { index, value, bits: w.bits.count() });
        }
        // Zero points apply to the codes the kernel multiplies: 8-bit ones when looked up.
        let wide = w.bits == Bits::B8 || w.lookup.is_some();
        let zero_limit = if wide { 256 } else { levels };
        if let Some((index, &value)) = w.zero_points.iter().enumerate().find(|(_, z)| !(0..zero_limit).contains(*z)) {
            return Err(QuantError::BadZeroPoint { index, value, min: 0, max: zero_limit - 1 });
        }
        check_stored_scales(w.scales)?;
        let layout = isa.panel_layout(w.bits);
        let (wide_xor, wide_offset) = if wide { (layout.wide_xor, layout.wide_offset) } else { (0, 0) };
        // 8-bit codes are XORed where they are stored: in the panel, or in the table.
        let code_xor = if w.bits == Bits::B8 { wide_xor } else { 0 };
        let lookup = w.lookup.map(|table| table.map(|code| code ^ wide_xor));
        let nr = layout.nr;
        let panels = w.n.div_ceil(nr);
        let panel_bytes = nr * blocks.padded_k * w.bits.count() as usize / 8;
        let mut codes = CacheAligned::zeroed(panels * panel_bytes);
        let mut scales = vec![0f32; panels * param_blocks * nr];
        let mut zero_offsets: Vec<i16> = vec![0i16; panels * param_blocks * nr];
        let mut mins = vec![0f32; if w.mins.is_empty() { 0 } else { panels * param_blocks * nr }];
        let bits = w.bits.count() as usize;
        let steps_per_load = 8 / bits;
        for col in 0..w.n {
            let (panel, lane) = (col / nr, col % nr);
            let dst = &mut codes.as_mut_slice()[panel * panel_bytes..(panel + 1) * panel_bytes];
            for g in 0..blocks.count {
                let block_start = blocks.offset(g);
                // Bytes of the blocks before this one in the panel.
                let block_bytes = block_start * nr * bits / 8;
                for kk in 0..blocks.len(g) {
                    let code = w.codes[col * w.k + block_start + kk] ^ code_xor;
                    let (step, j) = (kk / 4, kk % 4);
                    let (load, sub) = (step / steps_per_load, step % steps_per_load);
                    dst[block_bytes + load * nr * 4 + lane * 4 + j] |= code << (sub * bits);
                }
            }
            for pb in 0..param_blocks {
                let at = (panel * param_blocks + pb) * nr + lane;
                scales[at] = w.scales[col * param_blocks + pb];
                zero_offsets[at] = (w.zero_points[col * param_blocks + pb] - wide_offset) as i16;
                if !mins.is_empty() {
                    mins[at] = w.mins[col * param_blocks + pb];
                }
            }
        }
        let half = w.half_params && w.per_block && fits_f16(&scales, &mins);
        let (half_scales, half_mins) = match half {
            true => (to_f16_bits(&std::mem::take(&mut scales)), to_f16_bits(&std::mem::take(&mut mins))),
            false => (Vec::new(), Vec::new()),
        };
        let first = w.zero_points.first().copied().unwrap_or(0);
        let uniform_zero_offset = w.zero_points.iter().all(|&z| z == first).then_some(first - wide_offset);
        if uniform_zero_offset.is_some() {
            // Symmetric weights: the kernel uses the one offset, so the per-column copies are not kept.
            zero_offsets = Vec::new();
        }
        Ok(Self {
            isa,
            n: w.n,
            bits: w.bits,
            blocks,
            per_block: w.per_block,
            nr,
            panel_bytes,
            codes,
            scales,
            zero_offsets,
            uniform_zero_offset,
            mins,
            half_scales,
            half_mins,
            lookup,
            input_scale: None,
            activation_step: None,
        })
    }

    /// These weights with every input row multiplied by `scale` (one positive finite factor per input channel)
    /// before it is quantized: SmoothQuant's `x / s` for weights quantized as `W diag(s)`. The product is taken
    /// inside the quantizer, on each row as it is quantized, so it costs no pass of its own.
    pub fn with_input_scale(mut self, scale: Vec<f32>) -> Result<Self> {
        check_input_scale(&scale, self.blocks.k)?;
        self.input_scale = Some(scale);
        Ok(self)
    }

    /// These weights with activations quantized statically: every row and block with the one calibrated `step`
    /// (positive and finite), codes `round(clamp(x * input_scale / step, -127, 127))`, instead of a scale per
    /// row and block from its own largest value. No maximum is taken, and the codes of a value do not depend on
    /// the rest of its row.
    pub fn with_activation_step(mut self, step: f32) -> Result<Self> {
        check_activation_step(step)?;
        self.activation_step = Some(step);
        Ok(self)
    }

    /// The static activation step, when the weights have one.
    pub fn activation_step(&self) -> Option<f32> {
        self.activation_step
    }

    /// The factor each input channel is multiplied by before quantizing, when the weights have one.
    pub fn input_scale(&self) -> Option<&[f32]> {
        self.input_scale.as_deref()
    }

    /// Output features.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn k(&self) -> usize {
        self.blocks.k
    }

    /// Bit width of the codes.
    pub fn bits(&self) -> Bits {
        self.bits
    }

    /// The kernel level the panels are laid out for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The K block length shared with activations.
    pub fn block(&self) -> usize {
        self.blocks.block
    }

    /// Bytes held: codes, scales, zero offsets, minimums, lookup table and input scale, padding included.
    pub fn storage_bytes(&self) -> usize {
        self.codes.len()
            + 4 * (self.scales.len() + self.mins.len())
            + 2 * (self.zero_offsets.len() + self.half_scales.len() + self.half_mins.len())
            + self.lookup.map_or(0, |table| table.len())
            + 4 * self.input_scale.as_ref().map_or(0, Vec::len)
    }

    /// Whether per-block scales and minimums are kept in f16.
    pub fn half_params(&self) -> bool {
        !self.half_scales.is_empty()
    }

    /// Number of panels.
    pub(crate) fn panels(&self) -> usize {
        self.codes.len() / self.panel_bytes
    }

    /// Parameter blocks per panel.
    pub(crate) fn param_blocks(&self) -> usize {
        if self.per_block {
            self.blocks.count
        } else {
            1
        }
    }
}

fn to_f16_bits(values: &[f32]) -> Vec<u16> {
    values.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect()
}

/// What packing needs to know of a kernel level.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PanelLayout {
    /// Columns per panel.
    pub nr: usize,
    /// XOR applied to 8-bit codes (and lookup tables' entries).
    pub wide_xor: u8,
    /// Offset the 8-bit dot product carries.
    pub wide_offset: i32,
}

/// Checks a SmoothQuant input scale: one positive, finite factor for each of the `k` input features.
pub(crate) fn check_input_scale(scale: &[f32], k: usize) -> Result<()> {
    if scale.len() != k {
        return Err(QuantError::ShapeMismatch {
            what: "input scale vs input features",
            left: vec![scale.len()],
            right: vec![k],
        });
    }
    match scale.iter().enumerate().find(|(_, s)| !(s.is_finite() && **s > 0.0)) {
        Some((index, &value)) => Err(QuantError::NonFinite { what: "input scale (must be positive)", index, value }),
        None => Ok(()),
    }
}

/// Checks a static activation step: positive and finite.
pub(crate) fn check_activation_step(step: f32) -> Result<()> {
    match step.is_finite() && step > 0.0 {
        true => Ok(()),
        false => Err(QuantError::NonFinite { what: "activation step (must be positive)", index: 0, value: step }),
    }
}
