//! Checks of a model's configuration before its weights are read: every size in a sane range, every float finite and
//! above zero, token ids inside the vocabulary, and the sizes against the shapes of the weights. Each error names the
//! config key (and the tensor), so that a corrupt or mismatched `config.json` says what is wrong with it.

use anyhow::{bail, Result};

use crate::loader::QuantLoader;

/// The largest size a config may give: sizes are multiplied together, and anything larger is a corrupt config.
const MAX_SIZE: usize = 1 << 31;

/// Checks that each `(key, value)` is a size from 1 to [`MAX_SIZE`].
pub(crate) fn sizes(sizes: &[(&str, usize)]) -> Result<()> {
    for &(key, value) in sizes {
        if !(1..=MAX_SIZE).contains(&value) {
            bail!("{key} is {value}; it must be from 1 to {MAX_SIZE}");
        }
    }
    Ok(())
}

/// Checks that each `(key, value)` is finite and above 0 (a norm's epsilon, a rotary base).
pub(crate) fn positive(values: &[(&str, f64)]) -> Result<()> {
    for &(key, value) in values {
        if !(value.is_finite() && value > 0.0) {
            bail!("{key} is {value}; it must be finite and above 0");
        }
    }
    Ok(())
}

/// The width of one head when `width` (`(key, value)`) is split into `heads` heads, which must divide it.
pub(crate) fn head_width(width: (&str, usize), heads: (&str, usize)) -> Result<usize> {
    sizes(&[width, heads])?;
    if !width.1.is_multiple_of(heads.1) {
        bail!("{} {} is not a multiple of {} {}", width.0, width.1, heads.0, heads.1);
    }
    Ok(width.1 / heads.1)
}

/// Checks that token id `key` (if the config names one) is inside a vocabulary of `vocab` tokens.
pub(crate) fn token_id(key: &str, id: Option<u64>, vocab: usize) -> Result<()> {
    match id {
        Some(id) if id >= vocab as u64 => bail!("{key} {id} is outside the vocabulary of {vocab} tokens"),
        _ => Ok(()),
    }
}

/// A size of the config and where the weights hold it: dimension `axis` of `tensor`.
pub(crate) struct WeightDim<'a> {
    /// The config key (or an expression of keys: `num_attention_heads * head_dim`).
    pub key: &'a str,
    /// Its value.
    pub value: usize,
    /// The tensor that holds it.
    pub tensor: String,
    /// Which of the tensor's dimensions.
    pub axis: usize,
}

/// Checks each size against its tensor's shape, where the checkpoint holds the tensor as floats (quantized codes are
/// checked against the config as they are read; a missing tensor is reported when the model reads it).
pub(crate) fn weight_dims(loader: &QuantLoader, dims: &[WeightDim]) -> Result<()> {
    for dim in dims {
        let Some(shape) = loader.dims(&dim.tensor) else { continue };
        if shape.get(dim.axis) != Some(&dim.value) {
            bail!("the config says {} = {}, but {} has shape {shape:?}", dim.key, dim.value, dim.tensor);
        }
    }
    Ok(())
}

/// Checks that the checkpoint holds exactly `layers` layers `{prefix}.{i}` (`key` in the config), each recognised by
/// its float tensor `{prefix}.{i}.{probe}` (a norm, which quantized checkpoints store as it is).
pub(crate) fn layer_count(loader: &QuantLoader, key: &str, layers: usize, prefix: &str, probe: &str) -> Result<()> {
    let found = (0..=layers).take_while(|i| loader.contains(&format!("{prefix}.{i}.{probe}"))).count();
    match found {
        n if n == layers => Ok(()),
        0 => bail!("the config says {key} = {layers}, but the checkpoint has no {prefix}.0.{probe}"),
        n if n > layers => {
            bail!("the config says {key} = {layers}, but the checkpoint has more layers ({prefix}.{layers})")
        }
        n => bail!(
            "the config says {key} = {layers}, but the checkpoint holds {n} layers ({prefix}.0 to {prefix}.{})",
            n - 1
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_ranges_and_ids_are_checked() {
        assert!(sizes(&[("vocab_size", 1), ("hidden_size", MAX_SIZE)]).is_ok());
        let err = sizes(&[("num_hidden_layers", 0)]).unwrap_err().to_string();
        assert!(err.contains("num_hidden_layers is 0"), "{err}");
        assert!(positive(&[("layer_norm_eps", 1e-12)]).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(positive(&[("rope_theta", bad)]).unwrap_err().to_string().contains("rope_theta"), "{bad}");
        }
        assert_eq!(head_width(("hidden_size", 64), ("num_attention_heads", 4)).unwrap(), 16);
        let err = head_width(("hidden_size", 64), ("num_attention_heads", 5)).unwrap_err().to_string();
        assert!(err.contains("not a multiple of num_attention_heads 5"), "{err}");
        assert!(token_id("bos_token_id", Some(9), 10).is_ok() && token_id("bos_token_id", None, 10).is_ok());
        let err = token_id("eos_token_id", Some(1_000_000_000), 10).unwrap_err().to_string();
        assert!(err.contains("eos_token_id 1000000000 is outside the vocabulary of 10"), "{err}");
    }
}
