//! A quantization plan: which layer gets which scheme.
//!
//! A plan is plain data, read from TOML or JSON:
//!
//! ```toml
//! default = "int8"                      # every quantizable layer not matched below
//! exclude = ["pooler.*"]                # left in f32
//!
//! [[rules]]                             # first matching rule wins
//! pattern = "*.attention.self.value"
//! scheme = "int8-g32"
//!
//! [[rules]]
//! pattern = "encoder.layer.5.*"
//! scheme = "f32"
//! ```
//!
//! `embeddings = "int8-g32"` stores the token-embedding table in int8 as well (rows dequantized as tokens gather
//! them); without it the table stays f32. `default`, rules and exclusions speak of Linear layers only.
//!
//! `smooth = 0.5` applies SmoothQuant at that strength to every W8A8 layer of an encoder: per-input-channel factors
//! from the largest inputs each layer sees on calibration text (the built-in sentences of
//! [`crate::analysis::DEFAULT_CALIBRATION`], run through the float model when the plan is applied) move activation
//! outliers into the weights. A checkpoint saved under such a plan stores the smoothed weights and each layer's
//! input factors, so loading it runs no calibration.
//!
//! A `w8a8-static` layer quantizes its inputs with one step calibrated on the same sentences (the largest input
//! it saw, after the smoothing factors when `smooth` is set, over 127); a checkpoint stores it as
//! `L.activation_step`.
//!
//! Patterns are globs over the layer's dotted name: `*` matches any run of characters (dots included), `?` one
//! character. Scheme names are those of [`qlayers::LayerScheme`].

use std::path::Path;

use anyhow::{bail, Context, Result};
use qlayers::LayerScheme;
use serde::{Deserialize, Serialize};

/// One per-layer rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Glob over dotted layer names.
    pub pattern: String,
    /// Scheme name for the layers it matches.
    pub scheme: String,
}

/// Which scheme each layer of a model gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Scheme of every layer that no rule or exclusion matches.
    pub default: String,
    /// Globs of layers kept in f32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Per-layer overrides; the first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Scheme of the token-embedding table: a symmetric int8 weight scheme (`int8-gN`); f32 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<String>,
    /// SmoothQuant's migration strength (0 to 1) for the W8A8 layers of an encoder; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smooth: Option<f32>,
}

impl Plan {
    /// Every layer gets `scheme`.
    pub fn uniform(scheme: LayerScheme) -> Self {
        Self { default: scheme.to_string(), exclude: Vec::new(), rules: Vec::new(), embeddings: None, smooth: None }
    }

    /// The default int8 plan for BERT: W8A8 with activation blocks of 64 and weight scales per channel and block
    /// of 64, SmoothQuant at strength 0.5 (factors from the built-in calibration sentences), and the
    /// token-embedding table in int8 with a scale per 32 values ([`Plan::INT8_TABLE`]): it is most of a small
    /// encoder's bytes (47 of MiniLM's 60 MB in f32). On all-MiniLM-L6-v2 and the 128 texts of the reference corpus
    /// (none of them calibration text): cosine 0.99973 mean, 0.99950 min, top-10 overlap 0.990 to fp32, against
    /// 0.99967 / 0.99947 / 0.988 for blocks of 32 unsmoothed (the plan before), whose float step every 32 values
    /// makes the batch 6-10% slower; unsmoothed blocks of 64 give 0.99950 / 0.99900 / 0.980.
    pub fn bert_int8() -> Self {
        let mut plan = Self::uniform(LayerScheme::W8A8 { act_block: 64, weight_per_block: true });
        plan.embeddings = Some(Self::INT8_TABLE.to_string());
        plan.smooth = Some(Self::BERT_SMOOTHING);
        plan
    }

    /// The SmoothQuant strength of [`Plan::bert_int8`].
    pub const BERT_SMOOTHING: f32 = 0.5;

    /// The embedding-table scheme of [`Plan::bert_int8`]: symmetric int8, one scale per 32 values of a row.
    pub const INT8_TABLE: LayerScheme = LayerScheme::Weight { bits: qlayers::Bits::B8, group: 32, symmetric: true };

    /// A Llama plan: every layer gets `body`, except `lm_head`, which gets int8 weights (groups of 32) whenever the
    /// body is quantized, as llama.cpp does: at batch 1 the head is a fifth of SmolLM2's bytes, and 4 bits there
    /// cost more accuracy than anywhere else. A rule for `lm_head` (or an exclusion) in a plan file overrides it.
    pub fn llama(body: LayerScheme) -> Self {
        let mut plan = Self::uniform(body);
        if body != LayerScheme::F32 {
            plan.rules.push(Rule { pattern: "lm_head".into(), scheme: Self::LLAMA_HEAD.to_string() });
        }
        plan
    }

    /// The default Llama int8 plan: int8 weights in groups of 16 (see [`Plan::llama_preset`]), int8 `lm_head`.
    pub fn llama_int8() -> Self {
        Self::llama(LayerScheme::Weight { bits: qlayers::Bits::B8, group: 16, symmetric: true })
    }

    /// The `lm_head` scheme of [`Plan::llama`].
    pub const LLAMA_HEAD: LayerScheme = LayerScheme::Weight { bits: qlayers::Bits::B8, group: 32, symmetric: true };

    /// The Llama plan a preset name stands for: `fp32`; `int8` (int8 weights in groups of 16, since activations
    /// are quantized in the weights' blocks and blocks of 32 raise SmolLM2's perplexity by 0.6% against 0.25%);
    /// `int4` and `int2` (asymmetric min-max groups of 32, the form of llama.cpp's Q4_1); or any scheme name for
    /// the body. All keep an int8 `lm_head` (see [`Plan::llama`]).
    pub fn llama_preset(name: &str) -> Result<Self> {
        let lower = name.trim().to_ascii_lowercase();
        let body = match lower.as_str() {
            "int8" => return Ok(Self::llama_int8()),
            "int4" => "int4-g32-asym",
            "int2" => "int2-g32-asym",
            other => other,
        };
        Ok(Self::llama(parse_scheme(body)?))
    }

    /// Parses a plan from TOML (or JSON, when the text starts with `{`) and checks every scheme name.
    pub fn parse(text: &str) -> Result<Self> {
        let plan: Plan = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).context("invalid JSON plan")?
        } else {
            toml::from_str(text).context("invalid TOML plan")?
        };
        plan.validate()?;
        Ok(plan)
    }

    /// Reads a plan file (TOML or JSON).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read plan {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in plan {}", path.display()))
    }

    /// The plan as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a plan always serializes")
    }

    /// Checks that every scheme name parses and no pattern is empty.
    pub fn validate(&self) -> Result<()> {
        parse_scheme(&self.default).context("default scheme")?;
        for rule in &self.rules {
            if rule.pattern.is_empty() {
                bail!("a rule has an empty pattern");
            }
            parse_scheme(&rule.scheme).with_context(|| format!("rule {:?}", rule.pattern))?;
        }
        if self.exclude.iter().any(String::is_empty) {
            bail!("an exclusion is an empty pattern");
        }
        self.embedding_scheme()?;
        if let Some(alpha) = self.smooth.filter(|a| !(0.0..=1.0).contains(a)) {
            bail!("smooth = {alpha}: the SmoothQuant strength is between 0 and 1");
        }
        Ok(())
    }

    /// Whether any layer of the plan is static W8A8 (`w8a8-static`), whose activation steps are calibrated when
    /// the plan is applied to a float model, as SmoothQuant's factors are.
    pub fn uses_static_activations(&self) -> bool {
        let is_static = |name: &str| parse_scheme(name).is_ok_and(|s| s == LayerScheme::W8A8Static);
        is_static(&self.default) || self.rules.iter().any(|r| is_static(&r.scheme))
    }

    /// The scheme of the token-embedding table: f32, or the symmetric int8 weight scheme `embeddings` names.
    pub fn embedding_scheme(&self) -> Result<LayerScheme> {
        let Some(name) = &self.embeddings else { return Ok(LayerScheme::F32) };
        let scheme = parse_scheme(name).context("embeddings scheme")?;
        match scheme {
            LayerScheme::F32 | LayerScheme::Weight { bits: qlayers::Bits::B8, symmetric: true, .. } => Ok(scheme),
            other => bail!("embeddings = {other:?}: an embedding table is f32 or symmetric int8 (int8-gN)"),
        }
    }

    /// The scheme of the layer named `name` (dotted, as in the checkpoint: `encoder.layer.0.attention.self.query`).
    pub fn scheme_for(&self, name: &str) -> Result<LayerScheme> {
        match self.named_scheme_for(name)? {
            Some(scheme) => Ok(scheme),
            None => parse_scheme(&self.default),
        }
    }

    /// The scheme an exclusion or a rule gives the layer `name`, or `None` where it takes the default.
    pub fn named_scheme_for(&self, name: &str) -> Result<Option<LayerScheme>> {
        if self.exclude.iter().any(|p| glob_match(p, name)) {
            return Ok(Some(LayerScheme::F32));
        }
        self.rules.iter().find(|r| glob_match(&r.pattern, name)).map(|r| parse_scheme(&r.scheme)).transpose()
    }
}

/// The plan as one line of JSON (`{"default":"w8a8-b32-pb","exclude":["pooler.*"]}`).
impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| std::fmt::Error)?)
    }
}

fn parse_scheme(name: &str) -> Result<LayerScheme> {
    name.parse::<LayerScheme>().map_err(anyhow::Error::from)
}

/// Whether `name` matches the glob `pattern` (`*`: any run of characters, `?`: one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.attention.self.value", "encoder.layer.3.attention.self.value"));
        assert!(!glob_match("*.attention.self.value", "encoder.layer.3.attention.self.query"));
        assert!(glob_match("pooler.*", "pooler.dense"));
        assert!(glob_match("encoder.layer.?.output.dense", "encoder.layer.5.output.dense"));
        assert!(!glob_match("encoder.layer.?.output.dense", "encoder.layer.11.output.dense"));
        assert!(glob_match("*", "anything.at.all"));
        assert!(!glob_match("pooler", "pooler.dense"));
    }

    #[test]
    fn rules_exclusions_and_default() {
        let plan = Plan::parse(
            r#"
            default = "int8"
            exclude = ["pooler.*"]
            [[rules]]
            pattern = "*.attention.self.value"
            scheme = "int8-g32"
            [[rules]]
            pattern = "*.value"
            scheme = "int4"
            "#,
        )
        .unwrap();
        assert_eq!(plan.scheme_for("encoder.layer.0.attention.self.value").unwrap().to_string(), "int8-g32");
        assert_eq!(plan.scheme_for("x.value").unwrap().to_string(), "int4-g32");
        assert_eq!(plan.scheme_for("pooler.dense").unwrap(), LayerScheme::F32);
        assert_eq!(plan.scheme_for("encoder.layer.0.intermediate.dense").unwrap(), LayerScheme::w8a8());
        // TOML and JSON forms read back to the same plan.
        assert_eq!(Plan::parse(&plan.to_toml()).unwrap(), plan);
        assert_eq!(Plan::parse(&serde_json::to_string(&plan).unwrap()).unwrap(), plan);
    }

    #[test]
    fn smoothing_reads_back_and_stays_between_0_and_1() {
        let plan = Plan::bert_int8();
        assert_eq!(plan.smooth, Some(0.5));
        assert_eq!(Plan::parse(&plan.to_toml()).unwrap(), plan);
        assert_eq!(Plan::parse(&serde_json::to_string(&plan).unwrap()).unwrap(), plan);
        assert_eq!(Plan::parse("default = \"w8a8-row\"\nsmooth = 0.8").unwrap().smooth, Some(0.8));
        for bad in ["1.5", "-0.1", "nan"] {
            let err = Plan::parse(&format!("default = \"w8a8-row\"\nsmooth = {bad}")).unwrap_err();
            assert!(format!("{err:#}").contains("between 0 and 1"), "{bad}: {err:#}");
        }
    }

    #[test]
    fn static_layers_ask_for_calibration() {
        assert!(!Plan::bert_int8().uses_static_activations());
        assert!(Plan::uniform(LayerScheme::W8A8Static).uses_static_activations());
        let plan =
            Plan::parse("default = \"w8a8-row\"\n[[rules]]\npattern = \"*.query\"\nscheme = \"w8a8-static\"").unwrap();
        assert!(plan.uses_static_activations());
        assert_eq!(plan.scheme_for("encoder.layer.0.attention.self.query").unwrap(), LayerScheme::W8A8Static);
        assert_eq!(LayerScheme::W8A8Static.to_string().parse::<LayerScheme>().unwrap(), LayerScheme::W8A8Static);
        assert!("w8a8-static-pb".parse::<LayerScheme>().is_err());
    }

    #[test]
    fn llama_plans_keep_an_int8_head() {
        let plan = Plan::llama_preset("int4").unwrap();
        assert_eq!(plan.scheme_for("model.layers.0.mlp.up_proj").unwrap().to_string(), "int4-g32-asym");
        assert_eq!(plan.scheme_for("lm_head").unwrap().to_string(), "int8-g32");
        assert_eq!(Plan::llama_preset("fp32").unwrap().scheme_for("lm_head").unwrap(), LayerScheme::F32);
        assert_eq!(Plan::llama_preset("int8").unwrap().scheme_for("lm_head").unwrap(), Plan::LLAMA_HEAD);
        // One rule keeps the head in f32.
        let mut plan = Plan::llama_preset("int4").unwrap();
        plan.rules.insert(0, Rule { pattern: "lm_head".into(), scheme: "f32".into() });
        assert_eq!(plan.scheme_for("lm_head").unwrap(), LayerScheme::F32);
        assert!(Plan::llama_preset("int3").is_err());
    }

    #[test]
    fn embedding_tables_take_f32_or_symmetric_int8() {
        assert_eq!(Plan::uniform(LayerScheme::w8a8()).embedding_scheme().unwrap(), LayerScheme::F32);
        assert_eq!(Plan::bert_int8().embedding_scheme().unwrap(), Plan::INT8_TABLE);
        let plan = Plan::parse("default = \"w8a8-b64\"\nembeddings = \"int8-g64\"").unwrap();
        assert_eq!(plan.embedding_scheme().unwrap().to_string(), "int8-g64");
        assert_eq!(Plan::parse(&plan.to_toml()).unwrap(), plan);
        for bad in ["int4-g32", "w8a8-b64", "int8-g32-asym", "nope"] {
            let err = Plan::parse(&format!("default = \"int8\"\nembeddings = \"{bad}\"")).unwrap_err();
            assert!(format!("{err:#}").contains("embeddings"), "{bad}: {err:#}");
        }
    }

    #[test]
    fn bad_plans_are_errors() {
        let err = Plan::parse("default = \"int3\"").unwrap_err();
        assert!(format!("{err:#}").contains("unknown scheme \"int3\""), "{err:#}");
        let err = Plan::parse("default = \"int8\"\n[[rules]]\npattern = \"a\"\nscheme = \"nope\"").unwrap_err();
        assert!(format!("{err:#}").contains("rule \"a\""), "{err:#}");
        assert!(Plan::parse("default = \"int8\"\nunknown = 1").is_err());
        assert!(Plan::parse("{ not json").is_err());
    }
}
