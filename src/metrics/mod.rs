//! Measurement: errors against ground truth, empirical orders, exact Gaussian laws and
//! distances between distributions. Nothing here depends on the experiments that use it.

pub mod assignment;
pub mod distribution;
pub mod flow_map;
pub mod law;
pub mod order;
pub mod sde;

pub use distribution::{mean_se, Estimate};
pub use law::GaussianLaw;
pub use order::{empirical_order, fit_line, sample_error, LineFit, OrderFit, SampleError};
