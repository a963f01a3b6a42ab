//! Argus query languages (placeholder while the evaluator is written).
