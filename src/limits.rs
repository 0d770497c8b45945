//! Documented limits on sizes that come from input (a file's header, a spec string, a command-line
//! option), checked before anything of that size is allocated, so that a bad size is one error
//! line naming the limit instead of an abort.
//!
//! | what | limit |
//! |---|---|
//! | steps of a grid | [`MAX_STEPS`] = 10^6 |
//! | entries of one batch array (N x d: samples, `.npy` inputs, training batches) | [`MAX_ELEMENTS`] = 2^28 (2 GiB of float64) |
//! | parameters of a network | [`MAX_PARAMS`] = 2^26 |
//! | width of a network layer | [`MAX_WIDTH`] = 2^16 |
//! | hidden layers of a network | [`MAX_DEPTH`] = 1024 |
//! | NFE target of a sweep | [`MAX_NFE`] = 10^6 |

use crate::error::{Error, Result};

pub const MAX_STEPS: usize = 1_000_000;
pub const MAX_ELEMENTS: usize = 1 << 28;
pub const MAX_PARAMS: usize = 1 << 26;
pub const MAX_WIDTH: usize = 1 << 16;
pub const MAX_DEPTH: usize = 1024;
pub const MAX_NFE: usize = 1_000_000;

/// An error unless `n` entries fit [`MAX_ELEMENTS`]; `source` and `field` name where `n` came from.
pub fn check_elements(source: &str, field: &str, n: usize) -> Result<()> {
    if n > MAX_ELEMENTS {
        return Err(Error::invalid(
            source,
            Some(field.into()),
            format!("{n} entries exceed the limit of {MAX_ELEMENTS} (2^28) entries per array"),
        ));
    }
    Ok(())
}

/// rows x cols, an error when the product overflows or exceeds [`MAX_ELEMENTS`].
pub fn elements(source: &str, field: &str, rows: usize, cols: usize) -> Result<usize> {
    let n = rows.saturating_mul(cols);
    check_elements(source, field, n)?;
    Ok(n)
}
