//! The Argus server library (placeholder).
