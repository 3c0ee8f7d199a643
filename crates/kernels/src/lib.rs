//! layerfold-kernels: candle custom ops whose CPU implementation defines the semantics and whose
//! CUDA implementation (feature `cuda`) makes them fast. The ops arrive with the issues that need them
//! (activation-intensity scoring, concatenated-layer construction, distillation loss; DESIGN.md).
