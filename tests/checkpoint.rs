//! Pre-quantized checkpoints of the real all-MiniLM-L6-v2: save, load, identical embeddings, no fp32 weights read;
//! optimum-quanto int8 checkpoints; corrupt and mismatched checkpoints.

mod common;

use std::time::Instant;

use candle_core::safetensors::MmapedSafetensors;
use common::{corpus, minilm_dir, Scratch};
use qlayers::{Bits, Granularity, LayerScheme, LinearScheme, QTensor};
use safetensors::Dtype;
use swap::export::quantize_encoder;
use swap::{Embedder, Plan};

fn texts() -> Vec<String> {
    corpus().into_iter().take(32).collect()
}

fn embed(e: &Embedder) -> Vec<Vec<f32>> {
    let texts = texts();
    e.embed(&texts.iter().map(String::as_str).collect::<Vec<_>>()).unwrap()
}

/// Saves `plan`, reloads the checkpoint and checks the embeddings are bit-identical to quantizing on load, on our
/// kernels and on candle's.
fn round_trip(plan: Plan, tag: &str) -> Scratch {
    let out = Scratch::new(tag);
    let report = quantize_encoder(&minilm_dir(), plan.clone(), out.path(), |_, _, _| {}).unwrap();
    assert!(report.saved_bytes < report.source_bytes, "{} !< {}", report.saved_bytes, report.source_bytes);
    let direct = Embedder::load(&minilm_dir(), plan.clone()).unwrap();
    let saved = Embedder::open(out.path(), None).unwrap();
    assert_eq!(embed(&direct), embed(&saved), "{tag}: embeddings differ after the round trip");
    // On candle's kernels (the path of GPU devices) the saved codes give what quantizing there on load gives.
    let placement = swap::Placement::parse("candle-cpu").unwrap();
    let direct = Embedder::open_on(&minilm_dir(), Some(plan.clone()), &placement).unwrap();
    let saved = Embedder::open_on(out.path(), None, &placement).unwrap();
    assert_eq!(embed(&direct), embed(&saved), "{tag}: embeddings differ after the round trip on candle's kernels");
    // The same plan may be named explicitly; another plan is refused.
    assert!(Embedder::open(out.path(), Some(plan)).is_ok());
    let err = Embedder::open(out.path(), Some(Plan::uniform(LayerScheme::F32))).err().unwrap();
    assert!(format!("{err:#}").contains("cannot run plan"), "{err:#}");
    out
}

#[test]
fn int8_checkpoint_round_trips_without_fp32_weights() {
    let out = round_trip(Plan::bert_int8(), "int8");
    // Every Linear weight and the token-embedding table are stored as codes: the only float `.weight` tensors
    // left are the position and token-type embeddings and the norms.
    // SAFETY: nothing writes the file while it is mapped.
    let tensors = unsafe { MmapedSafetensors::new(out.path().join("model.safetensors")) }.unwrap();
    let mut codes = 0;
    for (name, view) in tensors.tensors() {
        if name.ends_with(".weight.codes") {
            assert_eq!(view.dtype(), Dtype::I8, "{name}");
            codes += 1;
        } else if name.ends_with(".weight") {
            assert!(
                name.contains("position_embeddings") || name.contains("token_type") || name.contains("LayerNorm"),
                "float weight {name} in the checkpoint"
            );
        }
    }
    assert_eq!(codes, 6 * 6 + 1);
    // The default plan smooths every W8A8 layer: each stores SmoothQuant's input factors, which the fused Q, K and
    // V share, so loading runs no calibration.
    let scale = |name: &str| tensors.get(&format!("encoder.layer.0.{name}.input_scale")).unwrap();
    assert_eq!(
        (scale("attention.self.query").dtype(), scale("attention.self.query").shape()),
        (Dtype::F32, &[384usize][..])
    );
    assert_eq!(scale("attention.self.query").data(), scale("attention.self.value").data());
    assert_eq!(scale("intermediate.dense").shape(), [384]);
    assert_eq!(scale("output.dense").shape(), [1536]);
    // The side files travel with it, and config.json records the plan and every layer.
    for f in ["tokenizer.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"] {
        assert!(out.path().join(f).exists(), "{f} was not copied");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap()).unwrap();
    let qc = &config["quantization_config"];
    assert_eq!(qc["quant_method"], "qinfer");
    assert_eq!(qc["layers"]["encoder.layer.0.attention.self.query"], "w8a8-b64-pb");
    assert_eq!(qc["layers"]["embeddings.word_embeddings"], "int8-g32");
    assert_eq!(qc["layers"].as_object().unwrap().len(), 36 + 1);
}

#[test]
fn static_int8_checkpoints_carry_their_activation_steps() {
    let plan = Plan::parse("default = \"w8a8-static\"\nembeddings = \"int8-g32\"\nsmooth = 0.5\n").unwrap();
    let out = round_trip(plan, "static");
    // Each layer stores its calibrated step beside SmoothQuant's factors; the fused Q, K and V share both, and
    // loading runs no calibration.
    // SAFETY: nothing writes the file while it is mapped.
    let tensors = unsafe { MmapedSafetensors::new(out.path().join("model.safetensors")) }.unwrap();
    let step = |name: &str| tensors.get(&format!("encoder.layer.0.{name}.activation_step")).unwrap();
    for name in ["attention.self.query", "attention.output.dense", "intermediate.dense", "output.dense"] {
        let view = step(name);
        assert_eq!((view.dtype(), view.shape()), (Dtype::F32, &[1usize][..]), "{name}");
        let value = f32::from_le_bytes(view.data().try_into().unwrap());
        assert!(value.is_finite() && value > 0.0, "{name}: step {value}");
        assert!(tensors.get(&format!("encoder.layer.0.{name}.input_scale")).is_ok(), "{name}");
    }
    assert_eq!(step("attention.self.query").data(), step("attention.self.key").data());
    // config.json saying another scheme for a static layer is refused: its step has no place there.
    let config_path = out.path().join("config.json");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let layer = "\"encoder.layer.1.intermediate.dense\": ";
    std::fs::write(&config_path, config.replace(&format!("{layer}\"w8a8-static\""), &format!("{layer}\"w8a8-row\"")))
        .unwrap();
    let err = format!("{:#}", Embedder::open(out.path(), None).err().expect("an error"));
    assert!(err.contains("encoder.layer.1.intermediate.dense.activation_step"), "{err}");
}

#[test]
fn loading_a_checkpoint_is_faster_than_quantizing_on_load() {
    let out = Scratch::new("load-speed");
    quantize_encoder(&minilm_dir(), Plan::bert_int8(), out.path(), |_, _, _| {}).unwrap();
    let best = |f: &dyn Fn()| {
        (0..3)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    let from_fp32 = best(&|| drop(Embedder::load(&minilm_dir(), Plan::bert_int8()).unwrap()));
    let from_checkpoint = best(&|| drop(Embedder::open(out.path(), None).unwrap()));
    println!("load: fp32 + quantize {:.1} ms, checkpoint {:.1} ms", from_fp32 * 1e3, from_checkpoint * 1e3);
    assert!(from_checkpoint < from_fp32, "checkpoint {from_checkpoint} s, fp32 {from_fp32} s");
}

#[test]
fn packed_int4_and_mixed_plans_round_trip() {
    // 4-bit asymmetric codes (packed, with minimums), a layer left in f32, and Q/K/V on different schemes.
    let plan = Plan::parse(
        r#"
        default = "int4-g32-asym"
        exclude = ["*.output.dense"]
        [[rules]]
        pattern = "*.attention.self.value"
        scheme = "w8a8-b32-pb"
        [[rules]]
        pattern = "*.intermediate.dense"
        scheme = "int2-g32"
        "#,
    )
    .unwrap();
    let out = round_trip(plan, "mixed");
    // SAFETY: nothing writes the file while it is mapped.
    let tensors = unsafe { MmapedSafetensors::new(out.path().join("model.safetensors")) }.unwrap();
    let mins = tensors.get("encoder.layer.0.attention.self.query.weight.mins").unwrap();
    assert_eq!((mins.dtype(), mins.shape()), (Dtype::F32, &[384usize, 12][..]));
    let codes = tensors.get("encoder.layer.0.attention.self.query.weight.codes").unwrap();
    assert_eq!(codes.shape(), [384, 192]);
    assert_eq!(tensors.get("encoder.layer.0.output.dense.weight").unwrap().dtype(), Dtype::F32);
}

#[test]
fn corrupt_and_mismatched_checkpoints_are_clear_errors() {
    let out = Scratch::new("corrupt");
    quantize_encoder(&minilm_dir(), Plan::bert_int8(), out.path(), |_, _, _| {}).unwrap();
    let weights = out.path().join("model.safetensors");
    let config_path = out.path().join("config.json");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let open_err = || format!("{:#}", Embedder::open(out.path(), None).err().expect("an error"));

    // Re-quantizing a checkpoint is refused.
    let again = Scratch::new("again");
    let err = quantize_encoder(out.path(), Plan::bert_int8(), again.path(), |_, _, _| {}).unwrap_err();
    assert!(format!("{err:#}").contains("already quantized"), "{err:#}");

    // A layer's scheme in config.json that does not match its codes.
    std::fs::write(
        &config_path,
        config.replace(
            "\"encoder.layer.2.output.dense\": \"w8a8-b64-pb\"",
            "\"encoder.layer.2.output.dense\": \"int4-g32\"",
        ),
    )
    .unwrap();
    let err = open_err();
    assert!(err.contains("encoder.layer.2.output.dense"), "{err}");

    // Another library's quantization_config.
    std::fs::write(&config_path, config.replace("\"quant_method\": \"qinfer\"", "\"quant_method\": \"gptq\"")).unwrap();
    assert!(open_err().contains("\"gptq\""), "{}", open_err());
    std::fs::write(&config_path, &config).unwrap();

    // A truncated weights file.
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    assert!(open_err().contains("not a valid safetensors file"), "{}", open_err());
    std::fs::remove_file(&weights).unwrap();
    assert!(open_err().contains("has no model.safetensors"), "{}", open_err());
}

/// Writes all-MiniLM-L6-v2 as optimum-quanto saves a qint8 model: `weight._data` (I8) and `weight._scale`
/// (`[out, 1]`) per Linear, the rest as it was, and `quanto_qmap.json`.
fn write_quanto_checkpoint(out: &std::path::Path) {
    let src = minilm_dir();
    // SAFETY: nothing writes the file while it is mapped.
    let tensors = unsafe { MmapedSafetensors::new(src.join("model.safetensors")) }.unwrap();
    let mut entries: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut qmap = serde_json::Map::new();
    for (name, view) in tensors.tensors() {
        let is_linear = name.ends_with(".weight") && view.shape().len() == 2 && name.contains("encoder.layer");
        if !is_linear {
            entries.push((name.clone(), view.dtype(), view.shape().to_vec(), view.data().to_vec()));
            continue;
        }
        let layer = name.strip_suffix(".weight").unwrap();
        let w = tensors.load(&name, &candle_core::Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, LinearScheme::symmetric(Bits::B8, Granularity::PerChannel { dim: 0 })).unwrap();
        let rows = view.shape()[0];
        entries.push((format!("{name}._data"), Dtype::I8, view.shape().to_vec(), q.packed_codes().to_vec()));
        let scales = q.scales().iter().flat_map(|s| s.to_le_bytes()).collect();
        entries.push((format!("{name}._scale"), Dtype::F32, vec![rows, 1], scales));
        qmap.insert(layer.to_string(), serde_json::json!({"weights": "qint8", "activations": "none"}));
    }
    let views: Vec<_> = entries
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
    std::fs::write(out.join("quanto_qmap.json"), serde_json::Value::Object(qmap).to_string()).unwrap();
    for f in ["config.json", "tokenizer.json", "modules.json", "sentence_bert_config.json"] {
        std::fs::copy(src.join(f), out.join(f)).unwrap();
    }
    std::fs::create_dir_all(out.join("1_Pooling")).unwrap();
    std::fs::copy(src.join("1_Pooling/config.json"), out.join("1_Pooling/config.json")).unwrap();
}

#[test]
fn optimum_quanto_int8_checkpoints_load() {
    let out = Scratch::new("quanto");
    write_quanto_checkpoint(out.path());
    let quanto = Embedder::open(out.path(), None).unwrap();
    assert!(quanto.layers().iter().all(|l| l.scheme == LayerScheme::W8A8 { act_block: 32, weight_per_block: false }));
    // quanto's per-channel int8 codes are the ones our own per-channel W8A8 plan computes, so the two agree exactly.
    let ours =
        Embedder::load(&minilm_dir(), Plan::uniform(LayerScheme::W8A8 { act_block: 32, weight_per_block: false }))
            .unwrap();
    assert_eq!(embed(&quanto), embed(&ours));
    let err = Embedder::open(out.path(), Some(Plan::bert_int8())).err().unwrap();
    assert!(format!("{err:#}").contains("optimum-quanto"), "{err:#}");
    // Weight types we do not read are named.
    std::fs::write(
        out.path().join("quanto_qmap.json"),
        r#"{"encoder.layer.0.intermediate.dense": {"weights": "qint4", "activations": "none"}}"#,
    )
    .unwrap();
    let err = Embedder::open(out.path(), None).err().unwrap();
    assert!(format!("{err:#}").contains("qint4"), "{err:#}");
}
