//! Drop-in quantized constructors for a candle model's own code: `swap::nn::linear(in, out, vb, &plan)` stands where
//! `candle_nn::linear(in, out, vb)` stood. The weights come from the candle `VarBuilder` the model already uses (any
//! backend: safetensors, `VarMap`, npz, created with candle's initialisation when missing), the layer's name is the
//! builder's prefix, and the plan gives that name its scheme (a layer the plan excludes runs in f32). The results are
//! `qlayers` layers, which implement candle's `Module`, and errors are candle errors, so the surrounding code keeps
//! its types.

use candle_core::Result;
use candle_nn::{Conv2dConfig, VarBuilder};
use qlayers::{LayerScheme, QConv2d, QLinear};

use crate::plan::Plan;

/// Builds the layer at `vb`'s prefix with the scheme `plan` gives that name; errors name the layer.
fn quantized<T>(vb: &VarBuilder, plan: &Plan, build: impl FnOnce(LayerScheme) -> Result<T>) -> Result<T> {
    let name = vb.prefix();
    let scheme = plan.scheme_for(&name).map_err(|e| candle_core::Error::Msg(format!("layer {name}: {e:#}")))?;
    build(scheme).map_err(|e| candle_core::Error::Msg(format!("layer {name} as {scheme}: {e}")))
}

/// `candle_nn::linear` (weight and bias), quantized per `plan`.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder, plan: &Plan) -> Result<QLinear> {
    quantized(&vb, plan, |s| Ok(QLinear::from_linear(&candle_nn::linear(in_dim, out_dim, vb.clone())?, s)?))
}

/// `candle_nn::linear_no_bias`, quantized per `plan`.
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder, plan: &Plan) -> Result<QLinear> {
    quantized(&vb, plan, |s| Ok(QLinear::from_linear(&candle_nn::linear_no_bias(in_dim, out_dim, vb.clone())?, s)?))
}

/// `candle_nn::linear_b` (a bias when `bias`), quantized per `plan`.
pub fn linear_b(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder, plan: &Plan) -> Result<QLinear> {
    quantized(&vb, plan, |s| Ok(QLinear::from_linear(&candle_nn::linear_b(in_dim, out_dim, bias, vb.clone())?, s)?))
}

/// `candle_nn::conv2d` (weight and bias), quantized per `plan`.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
    plan: &Plan,
) -> Result<QConv2d> {
    quantized(&vb, plan, |s| {
        Ok(QConv2d::from_conv2d(&candle_nn::conv2d(in_channels, out_channels, kernel_size, cfg, vb.clone())?, s)?)
    })
}

/// `candle_nn::conv2d_no_bias`, quantized per `plan`.
pub fn conv2d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
    plan: &Plan,
) -> Result<QConv2d> {
    quantized(&vb, plan, |s| {
        let conv = candle_nn::conv2d_no_bias(in_channels, out_channels, kernel_size, cfg, vb.clone())?;
        Ok(QConv2d::from_conv2d(&conv, s)?)
    })
}
