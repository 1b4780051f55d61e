//! Model inputs and outputs on disk: `.npy` and `.npz` (numpy's formats), keyed by the graph's
//! input/output names.

mod npz;

pub use npz::{read_npy, read_npz, read_tensors, write_npz};
