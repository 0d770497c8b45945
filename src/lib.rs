#![doc = include_str!("../README.md")]
//!
//! Data flows one way: [`schedule`] -> [`prediction`] -> [`oracle`] (the exact [`gmm`] mixture,
//! the closed-form [`gaussian_flow`], the [`nn`] MLP; mixture and MLP also on a GPU with the
//! `cuda` feature) -> [`solver`] over a [`grid`] (and [`flow_map`]: the exact solution map, solvers
//! as maps, learned and distilled two-time networks) -> metrics -> experiments; [`tangent`] and
//! [`likelihood`] differentiate the flow (Jacobians,
//! the change of variables, variational bounds, the OT certificate); [`diffusers`] replays a
//! diffusers scheduler config over any oracle, on the solver machinery.

pub mod brownian;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod diffusers;
pub mod error;
pub mod exp;
pub mod flow_map;
pub mod schedule;
pub mod spec;
pub mod study;

pub use error::{Error, Result};
/// The ndarray version pfode is built with, re-exported for callers.
pub use ndarray;
pub use schedule::{NoiseLevel, Schedule};
pub mod gaussian_flow;
pub mod gmm;
pub mod grid;
pub mod guidance;
pub mod io;
pub mod likelihood;
pub mod limits;
pub mod metrics;
pub mod nn;
pub mod oracle;
pub mod prediction;
pub mod problems;
pub mod rng;
pub mod solver;
pub mod tangent;

pub use gaussian_flow::GaussianFlow;
pub use gmm::{Component, GaussianMixture, MixtureSpec};
pub use oracle::{Counted, Oracle};
pub use prediction::Prediction;
