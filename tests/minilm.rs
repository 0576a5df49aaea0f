//! all-MiniLM-L6-v2 end to end against sentence-transformers' fp32 embeddings (`tests/fixtures`). Needs the real
//! model in `models/cache/all-MiniLM-L6-v2` (`models/fetch minilm`); CI fetches it first, so a missing model
//! fails here instead of skipping.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use qlayers::LayerScheme;
use swap::eval::{cosine, Agreement};
use swap::{Embedder, Plan};

fn model_dir() -> PathBuf {
    common::minilm_dir()
}

/// The corpus and sentence-transformers' embedding of each text.
fn reference() -> &'static (Vec<String>, Vec<Vec<f32>>) {
    static REFERENCE: OnceLock<(Vec<String>, Vec<Vec<f32>>)> = OnceLock::new();
    REFERENCE.get_or_init(|| common::reference_embeddings(include_str!("fixtures/minilm_fp32_embeddings.jsonl")))
}

#[test]
fn fp32_matches_sentence_transformers() {
    let embedder = Embedder::load(&model_dir(), Plan::uniform(LayerScheme::F32)).unwrap();
    let (texts, expected) = reference();
    let ours = common::embed_all(&embedder, texts);
    let worst = ours.iter().zip(expected).map(|(a, b)| cosine(a, b)).fold(1.0, f64::min);
    println!("fp32: min cosine to sentence-transformers {worst:.7}");
    assert!(worst >= 0.99999, "min cosine {worst}");
}

#[test]
fn int8_default_plan_meets_the_accuracy_targets() {
    let embedder = Embedder::load(&model_dir(), Plan::bert_int8()).unwrap();
    let (texts, expected) = reference();
    let ours = common::embed_all(&embedder, texts);
    let Agreement { cosine_mean: mean, cosine_min: min, top10_overlap: overlap } = Agreement::between(&ours, expected);
    println!("int8: cosine mean {mean:.5}, min {min:.5}, top-10 overlap {overlap:.4}");
    assert!(mean >= 0.9995 && min >= 0.999 && overlap >= 0.98, "mean {mean}, min {min}, overlap {overlap}");
}

/// Static W8A8 (one calibrated activation step per layer), smoothed, on every layer but the FFN outputs (which
/// stay `w8a8-row`: their GELU inputs do not keep to a calibrated range): at least OpenVINO int8's accuracy on
/// this corpus (cosine mean 0.99767, its NNCF static int8 with SmoothQuant, `benches/README.md`).
#[test]
fn static_int8_keeps_openvino_accuracy_where_its_range_holds() {
    let plan = Plan::parse(
        "default = \"w8a8-static\"\nembeddings = \"int8-g32\"\nsmooth = 0.5\n\
         [[rules]]\npattern = \"*.layer.?.output.dense\"\nscheme = \"w8a8-row\"\n",
    )
    .unwrap();
    let embedder = Embedder::load(&model_dir(), plan).unwrap();
    let statics = embedder.layers().iter().filter(|l| l.scheme == LayerScheme::W8A8Static).count();
    assert_eq!(statics, 6 * 3, "fused QKV, attention output and intermediate of 6 layers");
    let (texts, expected) = reference();
    let ours = common::embed_all(&embedder, texts);
    let Agreement { cosine_mean: mean, cosine_min: min, top10_overlap: overlap } = Agreement::between(&ours, expected);
    println!("static int8: cosine mean {mean:.5}, min {min:.5}, top-10 overlap {overlap:.4}");
    assert!(mean >= 0.99767 && min >= 0.995 && overlap >= 0.94, "mean {mean}, min {min}, overlap {overlap}");
}

/// The path of GPU devices (candle's kernels, `--device cuda`), taken on the CPU: the default int8 plan keeps the
/// accuracy targets there, and weight-only int8 in groups of 32 runs as Q8_0 blocks through candle's quantized
/// matmul.
#[test]
fn int8_on_candle_kernels_meets_the_accuracy_targets() {
    let placement = swap::Placement::parse("candle-cpu").unwrap();
    let (texts, expected) = reference();
    let weight_only = Plan::uniform("int8-g32".parse().unwrap());
    for (plan, name) in [(Plan::bert_int8(), "default"), (weight_only, "int8-g32")] {
        let embedder = Embedder::open_on(&model_dir(), Some(plan), &placement).unwrap();
        assert!(embedder.layers().iter().all(|l| !matches!(l.path, qlayers::LayerPath::Kernels(_))));
        let ours = common::embed_all(&embedder, texts);
        let Agreement { cosine_mean: mean, cosine_min: min, top10_overlap: overlap } =
            Agreement::between(&ours, expected);
        println!("{name} on candle's kernels: cosine mean {mean:.5}, min {min:.5}, top-10 overlap {overlap:.4}");
        assert!(mean >= 0.9995 && min >= 0.999 && overlap >= 0.98, "{name}: mean {mean}, min {min}, overlap {overlap}");
    }
}

#[test]
fn a_text_embeds_the_same_alone_or_in_a_batch() {
    let embedder = Embedder::load(&model_dir(), Plan::bert_int8()).unwrap();
    let texts: Vec<&str> = reference().0.iter().take(32).map(String::as_str).collect();
    let batch = embedder.embed(&texts).unwrap();
    for i in [0, 5, 31] {
        let alone = embedder.embed(&[texts[i]]).unwrap();
        assert_eq!(alone[0], batch[i], "text {i}");
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let embedder = Embedder::load(&model_dir(), Plan::bert_int8()).unwrap();
    let err = embedder.embed(&["fine", "  "]).unwrap_err().to_string();
    assert!(err.contains("text #1 is empty"), "{err}");
    // Longer than max_seq_length: truncated, as sentence-transformers does.
    let long = "word ".repeat(2000);
    assert_eq!(embedder.token_counts(&[&long]).unwrap(), vec![256]);
    assert_eq!(embedder.embed(&[&long]).unwrap()[0].len(), 384);
}
