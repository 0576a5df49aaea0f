//! `swap`: builds BERT and Llama models whose layers are quantized while their weights are read, following a plan.
//!
//! The loader, plans and checkpoints are built on `qlayers`; see the workspace README for what is there today.
