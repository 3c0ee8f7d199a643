//! Calibration data (METHODS.md §1).

pub mod text;
