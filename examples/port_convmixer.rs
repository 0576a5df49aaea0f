//! Porting a candle model to quantized layers by changing its layer constructors: candle-transformers' ConvMixer
//! (`candle_transformers::models::convmixer`, grouped and pointwise convolutions and a linear head), with each
//! `candle_nn::conv2d` / `candle_nn::linear` call replaced by `swap::nn::conv2d` / `swap::nn::linear` and a plan
//! passed down. Both read the same `VarMap` (random weights; a safetensors `VarBuilder` works the same), and the
//! port is checked against the unquantized original: f32 to rounding, int8 by the cosine of the logits.
//!
//!   cargo run --release --example port_convmixer

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use qlayers::LayerScheme;
use swap::Plan;

/// The port: candle-transformers' `convmixer.rs` with the layer constructors swapped and the plan threaded through.
mod ported {
    use candle_core::Result;
    use candle_nn::{batch_norm, Conv2dConfig, Module, VarBuilder};
    use swap::Plan;

    #[allow(clippy::many_single_char_names)]
    fn conv2d_same(i: usize, o: usize, k: usize, c: Conv2dConfig, vb: VarBuilder, plan: &Plan) -> Result<impl Module> {
        let conv2d = swap::nn::conv2d(i, o, k, c, vb, plan)?;
        let s = c.stride;
        let module = candle_nn::func(move |xs| {
            let ih = xs.dim(2)?;
            let iw = xs.dim(3)?;
            let oh = ih.div_ceil(s);
            let ow = iw.div_ceil(s);
            let pad_h = usize::max((oh - 1) * s + k - ih, 0);
            let pad_w = usize::max((ow - 1) * s + k - iw, 0);
            if pad_h > 0 || pad_w > 0 {
                xs.pad_with_zeros(3, pad_w / 2, pad_w - pad_w / 2)?
                    .pad_with_zeros(2, pad_h / 2, pad_h - pad_h / 2)?
                    .apply(&conv2d)
            } else {
                xs.apply(&conv2d)
            }
        });
        Ok(module)
    }

    fn block(dim: usize, kernel_size: usize, vb: VarBuilder, plan: &Plan) -> Result<impl Module> {
        let conv2d_cfg = Conv2dConfig { groups: dim, ..Default::default() };
        let vb_fn = vb.pp(0).pp("fn");
        let conv1 = conv2d_same(dim, dim, kernel_size, conv2d_cfg, vb_fn.pp(0), plan)?;
        let bn1 = batch_norm(dim, 1e-5, vb_fn.pp(2))?;
        let conv2 = swap::nn::conv2d(dim, dim, 1, Default::default(), vb.pp(1), plan)?;
        let bn2 = batch_norm(dim, 1e-5, vb.pp(3))?;
        Ok(candle_nn::func(move |xs| {
            let ys = xs.apply(&conv1)?.gelu_erf()?.apply_t(&bn1, false)?;
            (xs + ys)?.apply(&conv2)?.gelu_erf()?.apply_t(&bn2, false)
        }))
    }

    /// `candle_transformers::models::convmixer::c1024_20`.
    pub fn c1024_20(nclasses: usize, vb: VarBuilder, plan: &Plan) -> Result<candle_nn::Func<'static>> {
        let (dim, depth, kernel_size, patch_size) = (1024, 20, 9, 14);
        let conv2d_cfg = Conv2dConfig { stride: patch_size, ..Default::default() };
        let conv1 = swap::nn::conv2d(3, dim, patch_size, conv2d_cfg, vb.pp(0), plan)?;
        let bn1 = batch_norm(dim, 1e-5, vb.pp(2))?;
        let blocks: Vec<_> =
            (0..depth).map(|index| block(dim, kernel_size, vb.pp(3 + index), plan)).collect::<Result<Vec<_>>>()?;
        let fc = swap::nn::linear(dim, nclasses, vb.pp(25), plan)?;
        Ok(candle_nn::func(move |xs| {
            let mut xs = xs.apply(&conv1)?.gelu_erf()?.apply_t(&bn1, false)?;
            for block in blocks.iter() {
                xs = xs.apply(block)?
            }
            xs.mean(3)?.mean(2)?.apply(&fc)
        }))
    }
}

/// The largest `|a - b|` over the largest `|b|`.
fn relative_error(a: &Tensor, b: &Tensor) -> Result<f32> {
    let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    Ok(diff / b.abs()?.max_all()?.to_scalar::<f32>()?)
}

/// The smallest cosine similarity between corresponding rows of `a` and `b` (`[batch, classes]`).
fn worst_cosine(a: &Tensor, b: &Tensor) -> Result<f32> {
    let (a, b) = (a.to_vec2::<f32>()?, b.to_vec2::<f32>()?);
    Ok(a.iter().zip(&b).map(|(a, b)| swap::eval::cosine(a, b) as f32).fold(1.0, f32::min))
}

fn main() -> Result<()> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    // The original creates every weight in the VarMap (candle's initialisation); the ports read the same ones.
    let original = candle_transformers::models::convmixer::c1024_20(1000, vb.clone())?;
    let image = Tensor::randn(0f32, 1.0, (2, 3, 224, 224), &device)?;
    let start = std::time::Instant::now();
    let want = original.forward(&image)?;
    println!("candle-transformers original, f32: ran in {:7.1} ms", start.elapsed().as_secs_f64() * 1e3);
    // The pointwise convolutions and the head (K = 1024) are quantized; the stem (3 x 14 x 14 = 588 values per
    // output) and the depthwise convolutions (81 per output) are too small to pay, and their K fits no group.
    let plan = |scheme: &str| -> Result<Plan> {
        let mut plan = Plan::uniform(scheme.parse()?);
        plan.exclude.extend(["0".to_string(), "*.fn.0".to_string()]);
        Ok(plan)
    };
    // f32 must give the original's logits to rounding; the quantized ports' logits must point the same way.
    for (name, plan, min_cosine) in [
        ("f32", Plan::uniform(LayerScheme::F32), 0.999_999),
        ("int8 weights (int8-g32)", plan("int8-g32")?, 0.999),
        ("w8a8 (w8a8-b32-pb)", plan("w8a8-b32-pb")?, 0.999),
        ("w8a8 per row (w8a8-row)", plan("w8a8-row")?, 0.998),
    ] {
        let start = std::time::Instant::now();
        let port = ported::c1024_20(1000, vb.clone(), &plan)?;
        let built = start.elapsed();
        let start = std::time::Instant::now();
        let got = port.forward(&image)?;
        let ran = start.elapsed();
        let (error, cosine) = (relative_error(&got, &want)?, worst_cosine(&got, &want)?);
        println!(
            "port, {name:24} built in {:6.1} ms, ran in {:7.1} ms: logits cosine {cosine:.6}, largest error {error:.2e} \
             of the largest logit",
            built.as_secs_f64() * 1e3,
            ran.as_secs_f64() * 1e3
        );
        ensure!(cosine >= min_cosine, "{name}: logits cosine {cosine} under {min_cosine}");
    }
    Ok(())
}
