//! Which instruction set the kernels use: detected once at run time, overridable with `QLAYERS_ISA`.

use std::sync::OnceLock;

use crate::error::{QuantError, Result};

/// Environment variable that forces a kernel level: `reference`, `avx2` or `avx512vnni`.
pub const ISA_ENV: &str = "QLAYERS_ISA";

/// A kernel level. Every level computes bit-identical results; they differ only in speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust that the compiler vectorizes; what every non-x86 target runs.
    Reference,
    /// x86-64 AVX2 (`vpmaddubsw` with the sign trick, exact without saturation).
    Avx2,
    /// x86-64 AVX-512 with VNNI (`vpdpbusd`).
    Avx512Vnni,
}

impl Isa {
    /// Every level, slowest first.
    pub const ALL: [Isa; 3] = [Isa::Reference, Isa::Avx2, Isa::Avx512Vnni];

    /// The name used by `QLAYERS_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Reference => "reference",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }

    /// Parses a `QLAYERS_ISA` value.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|isa| isa.name() == name.trim().to_ascii_lowercase()).ok_or_else(|| {
            QuantError::InvalidScheme(format!(
                "unknown kernel level {name:?} in {ISA_ENV}: expected reference, avx2 or avx512vnni"
            ))
        })
    }

    /// Whether this CPU can run the level.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Reference => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The levels this CPU supports, slowest first.
    pub fn supported() -> Vec<Isa> {
        Self::ALL.into_iter().filter(|isa| isa.is_supported()).collect()
    }

    /// The fastest level this CPU supports.
    pub fn best() -> Isa {
        Self::supported().into_iter().last().unwrap_or(Isa::Reference)
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The level new layers use: `QLAYERS_ISA` if set (it must name a level this CPU supports), else the best one.
/// Decided once per process.
pub fn selected_isa() -> Result<Isa> {
    static SELECTED: OnceLock<std::result::Result<Isa, String>> = OnceLock::new();
    SELECTED
        .get_or_init(|| match std::env::var(ISA_ENV) {
            Err(_) => Ok(Isa::best()),
            Ok(name) => match Isa::from_name(&name) {
                Ok(isa) if isa.is_supported() => Ok(isa),
                Ok(isa) => Err(format!("{ISA_ENV}={isa} but this CPU does not support {isa}")),
                Err(err) => Err(err.to_string()),
            },
        })
        .clone()
        .map_err(QuantError::InvalidScheme)
}

/// The CPU's model name (`model name` in `/proc/cpuinfo`), or the architecture where there is none; benchmark
/// reports print it beside the kernel level.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
