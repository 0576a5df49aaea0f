//! Model code written against `qlayers` layers.

pub mod attention;
pub mod bert;
mod embedding;
mod lanes;
pub mod llama;
pub mod ops;
mod projection;
