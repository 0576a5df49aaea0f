//! `swap::nn`: the candle_nn constructors with a plan. The layer is candle's (same weights, same initialisation
//! in a fresh `VarMap`), its name the builder's prefix, its scheme the plan's for that name.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder, VarMap};
use qlayers::LayerScheme;
use swap::plan::Rule;
use swap::Plan;

fn largest_error(a: &Tensor, b: &Tensor) -> f32 {
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    diff / b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn layers_take_the_plans_scheme_for_the_builders_prefix() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let mut plan = Plan::uniform("w8a8-b32-pb".parse().unwrap());
    plan.exclude.push("head.*".into());
    plan.rules.push(Rule { pattern: "blocks.1.*".into(), scheme: "int4-g32".into() });

    let x = Tensor::randn(0f32, 1.0, (3, 5, 96), &Device::Cpu).unwrap();
    let reference = candle_nn::linear(96, 64, vb.pp("blocks.0.fc")).unwrap();
    let quantized = swap::nn::linear(96, 64, vb.pp("blocks.0.fc"), &plan).unwrap();
    assert_eq!(quantized.scheme().to_string(), "w8a8-b32-pb");
    // Weights and inputs are random on every run: the largest error over the 960 outputs, relative to the largest
    // output, spreads to about 1.2% for W8A8 in blocks of 32 (a wrong kernel is off by the whole output).
    let error = largest_error(&quantized.forward(&x).unwrap(), &reference.forward(&x).unwrap());
    assert!(error < 2e-2, "w8a8 linear error {error}");
    // A plan rule and an exclusion, matched on the prefix.
    let int4 = swap::nn::linear_no_bias(96, 32, vb.pp("blocks.1.proj"), &plan).unwrap();
    assert_eq!(int4.scheme().to_string(), "int4-g32");
    let head = swap::nn::linear_b(96, 10, true, vb.pp("head.out"), &plan).unwrap();
    assert_eq!(head.scheme(), LayerScheme::F32);
    let candle_head = candle_nn::linear(96, 10, vb.pp("head.out")).unwrap();
    let error = largest_error(&head.forward(&x).unwrap(), &candle_head.forward(&x).unwrap());
    assert!(error < 1e-5, "f32 linear error {error}");

    // Convolutions, grouped and strided, weights created by candle's initialisation on first use.
    let image = Tensor::randn(0f32, 1.0, (2, 8, 17, 19), &Device::Cpu).unwrap();
    let cfg = Conv2dConfig { stride: 2, padding: 1, groups: 4, ..Default::default() };
    let conv = swap::nn::conv2d(8, 16, 3, cfg, vb.pp("stem"), &Plan::uniform(LayerScheme::F32)).unwrap();
    let candle_conv = candle_nn::conv2d(8, 16, 3, cfg, vb.pp("stem")).unwrap();
    let error = largest_error(&conv.forward(&image).unwrap(), &candle_conv.forward(&image).unwrap());
    assert!(error < 1e-5, "f32 conv error {error}");
    let conv = swap::nn::conv2d_no_bias(8, 16, 3, cfg, vb.pp("stem2"), &plan).unwrap();
    let candle_conv = candle_nn::conv2d_no_bias(8, 16, 3, cfg, vb.pp("stem2")).unwrap();
    let error = largest_error(&conv.forward(&image).unwrap(), &candle_conv.forward(&image).unwrap());
    assert!(error < 2e-2, "w8a8 conv error {error}");

    // A scheme the plan cannot parse is a candle error naming the layer.
    let mut bad = Plan::uniform(LayerScheme::F32);
    bad.rules.push(Rule { pattern: "odd".into(), scheme: "int3".into() });
    let err = swap::nn::linear(96, 8, vb.pp("odd"), &bad).err().unwrap().to_string();
    assert!(err.contains("layer odd"), "{err}");
}
