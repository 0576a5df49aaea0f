//! What quantization costs, layer by layer, and a mixed-precision plan chosen from it.
//!
//! A [`Probe`] holds a float model in memory with calibration data and the float model's outputs on it; it rebuilds
//! the model under any [`crate::Plan`] and scores the result ([`Quality`]). [`sensitivity`] quantizes one layer at a
//! time under each candidate scheme (weight round-trip error and whole-model loss), and [`auto_plan`] picks a scheme
//! per layer that meets a [`Target`] at the fewest bytes.

mod auto;
mod calibration;
mod grid;
mod probe;
mod sensitivity;

pub use auto::{auto_plan, AutoPlan, Target};
pub use calibration::{default_schemes, probe_on_text, DEFAULT_CALIBRATION};
pub use grid::grid_levels;
pub use probe::{Evaluation, LayerShape, Probe, Quality};
pub use sensitivity::{sensitivity, weight_round_trip, Candidate, LayerSensitivity, SchemeResult};
