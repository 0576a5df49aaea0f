//! Sensitivity analysis and automatic mixed precision on the real models (all-MiniLM-L6-v2, SmolLM2-135M): the
//! properties that make the numbers trustworthy. Needs `models/fetch minilm smollm2` (CI fetches both).

mod common;

use qlayers::LayerScheme;
use swap::analysis::{auto_plan, sensitivity, weight_round_trip, Candidate, Probe, Quality, Target};
use swap::{Embedder, Plan};

fn scheme(name: &str) -> LayerScheme {
    name.parse().unwrap()
}

fn candidates(schemes: &[LayerScheme]) -> Vec<Candidate> {
    schemes.iter().map(|&s| Candidate::from(s)).collect()
}

const TEXTS: [&str; 6] = [
    "The cat sat on the warm windowsill all afternoon.",
    "Interest rates rose again, and the housing market slowed.",
    "Press and hold the power button for ten seconds to reset the device.",
    "The violinist played the concerto from memory.",
    "Proteins fold into shapes that determine what they do in the cell.",
    "We missed the last train and walked home in the rain.",
];

#[test]
fn bert_losses_order_the_schemes_and_the_float_plan_is_exact() {
    let probe = Probe::embedder(&common::minilm_dir(), &TEXTS).unwrap();
    assert_eq!(probe.layers().len(), 36, "6 Linear layers in each of 6 blocks");
    assert_eq!(probe.layers()[0].name, "encoder.layer.0.attention.self.query");
    // The float plan reproduces the float embeddings (cosines of identical vectors, up to f64 rounding).
    let float = probe.evaluate(&Plan::uniform(LayerScheme::F32)).unwrap();
    let Quality::Embeddings { cosine_min, .. } = float.quality else { panic!("a BERT is scored by embeddings") };
    assert!((1.0 - cosine_min).abs() < 1e-12, "{cosine_min}");
    let schemes = [scheme("w8a8-b32-pb"), scheme("int4-g32"), scheme("int2-g32-asym")];
    let layers: Vec<_> = probe.layers().iter().filter(|l| l.name.starts_with("encoder.layer.5.")).cloned().collect();
    let table = sensitivity(&probe, &layers, &candidates(&schemes), true, |_, _, _| {}).unwrap();
    for row in &table {
        let losses: Vec<f64> = row.results.iter().map(|r| r.loss.unwrap()).collect();
        let snrs: Vec<f64> = row.results.iter().map(|r| r.weight_snr_db).collect();
        let bytes: Vec<usize> = row.results.iter().map(|r| r.bytes).collect();
        println!("{}: losses {losses:?}, SNR {snrs:.1?} dB, bytes {bytes:?}", row.layer.name);
        // Fewer bits: more weight error, more loss, fewer bytes.
        assert!(snrs[0] > snrs[1] && snrs[1] > snrs[2], "{snrs:?}");
        assert!(losses[0] < losses[1] && losses[1] < losses[2], "{losses:?}");
        assert!(bytes[0] > bytes[1] && bytes[1] > bytes[2], "{bytes:?}");
        // int8 weights round-trip at about 6 dB a bit: over 40 dB; int4 about 20.
        assert!(snrs[0] > 40.0 && (15.0..26.0).contains(&snrs[1]), "{snrs:?}");
    }
    // One layer alone quantized is exactly the model built from the one-rule plan.
    let one = Probe::single_layer_plan("encoder.layer.5.attention.self.value", scheme("int4-g32"));
    let direct = Embedder::load(&common::minilm_dir(), one).unwrap().embed(&TEXTS).unwrap();
    let float = Embedder::load(&common::minilm_dir(), Plan::uniform(LayerScheme::F32)).unwrap().embed(&TEXTS).unwrap();
    let Quality::Embeddings { cosine_mean, .. } = table[2].results[1].alone.unwrap().quality else {
        panic!("a BERT is scored by embeddings")
    };
    assert_eq!(table[2].layer.name, "encoder.layer.5.attention.self.value");
    assert_eq!(swap::eval::Agreement::between(&direct, &float).cosine_mean, cosine_mean);
}

#[test]
fn the_automatic_bert_plan_meets_its_target_in_fewer_bytes_than_int8() {
    let probe = Probe::embedder(&common::minilm_dir(), &TEXTS).unwrap();
    let schemes = [scheme("w8a8-b32-pb"), scheme("w8a8-b64"), scheme("int4-g32")];
    let table = sensitivity(&probe, probe.layers(), &candidates(&schemes), true, |_, _, _| {}).unwrap();
    let target: Target = "cosine>=0.999".parse().unwrap();
    let found = auto_plan(&probe, &table, target).unwrap();
    let int8 = probe.evaluate(&Plan::bert_int8()).unwrap();
    println!(
        "auto {}: {} in {} bytes; uniform int8: {} in {} bytes",
        target, found.evaluation.quality, found.evaluation.linear_bytes, int8.quality, int8.linear_bytes
    );
    assert!(target.met(&found.evaluation.quality, &probe.float().quality));
    assert!(found.evaluation.linear_bytes < int8.linear_bytes);
    // The plan is an ordinary plan: it round-trips through TOML and loads as any other.
    let plan = Plan::parse(&found.plan.to_toml()).unwrap();
    assert_eq!(plan, found.plan);
    let embedder = Embedder::load(&common::minilm_dir(), plan).unwrap();
    let bytes: usize = embedder.layers().iter().map(|l| l.bytes).sum();
    assert_eq!(bytes, found.evaluation.linear_bytes);
    // A target the candidates cannot reach is an error, not a silently worse plan; a Llama target is refused.
    assert!(auto_plan(&probe, &table, "cosine>=0.9999999".parse().unwrap()).is_err());
    assert!(auto_plan(&probe, &table, "ppl<=+2%".parse().unwrap()).is_err());
}

#[test]
fn llama_single_layer_losses_and_kl_grow_as_bits_shrink() {
    let path = common::smollm2_gguf();
    let probe = Probe::llama(&path, include_str!("fixtures/perplexity_text.txt"), 48).unwrap();
    assert_eq!(probe.layers().len(), 30 * 7 + 1);
    let Quality::Tokens { perplexity, kl } = probe.evaluate(&Plan::uniform(LayerScheme::F32)).unwrap().quality else {
        panic!("a Llama is scored by tokens")
    };
    assert_eq!(
        (perplexity, kl),
        match probe.float().quality {
            Quality::Tokens { perplexity, .. } => (perplexity, 0.0),
            _ => unreachable!(),
        }
    );
    // Not int4-g32-asym: SmolLM2 ships as Q4_1, so that grid gives back the file's own weights.
    let schemes = [scheme("int8-g16"), scheme("int4-g64"), scheme("int2-g32-asym")];
    let layers: Vec<_> = probe
        .layers()
        .iter()
        .filter(|l| l.name == "model.layers.3.mlp.down_proj" || l.name == "lm_head")
        .cloned()
        .collect();
    let table = sensitivity(&probe, &layers, &candidates(&schemes), true, |_, _, _| {}).unwrap();
    for row in &table {
        let kls: Vec<f64> = row
            .results
            .iter()
            .map(|r| match r.alone.unwrap().quality {
                Quality::Tokens { kl, .. } => kl,
                _ => unreachable!(),
            })
            .collect();
        println!("{}: KL {kls:?}", row.layer.name);
        assert!(kls[0] < kls[1] && kls[1] < kls[2], "{kls:?}");
        assert!(kls[0] > 0.0);
    }
    // Round trips keep the shape and, in f32, the weight itself.
    let w = probe.weight("lm_head").unwrap();
    assert_eq!(weight_round_trip(w, LayerScheme::F32).unwrap().dims(), w.dims());
}
