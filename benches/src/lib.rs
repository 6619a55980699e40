//! vigil's benchmarks: criterion benches under `benches/` and the figures in `README.md`.
//!
//! `cargo bench -p vigil-benches` runs them; `vigil bench` is the city-scale harness.
