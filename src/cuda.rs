//! GPU oracles (cargo feature `cuda`): the exact Gaussian mixture and the MLP on an NVIDIA GPU,
//! in float32 or float64, behind the same [`Oracle`] trait as their CPU versions.
//!
//! The kernels (`kernels/gmm.cu`, `kernels/mlp.cu`) are embedded and compiled at run time with
//! NVRTC; the MLP's matrix products are cuBLAS GEMMs. `cudarc` loads the CUDA 13 libraries
//! dynamically (`libcuda.so.1`, `libnvrtc.so.13`, `libcublas.so.13`) and panics when one is
//! missing, so [`probe`] first looks for each with `libloading` and [`Gpu::new`] reports a missing
//! library, a missing device or a failed compile as one error. [`Gpu::detect`] is the fall-back
//! helper: the GPU if usable, otherwise `None` and one line on stderr saying why the CPU is used.
//!
//! A batch is converted to the device precision in a page-locked staging buffer (in parallel),
//! copied to the device, evaluated, and copied back into the f64 output; staging and device
//! buffers are kept and grown on demand, so repeated calls allocate nothing. A GEMM is written in
//! cuBLAS's column-major terms: a row-major p x q matrix is a column-major q x p one, so the
//! row-major Z (n x out) = H (n x in) W^T with W (out x in) is Z^T = W H^T:
//! `gemm(T, N, m = out, n, k = in)`.

use crate::error::{Error, Result};
use crate::gmm::GaussianMixture;
use crate::nn::Mlp;
use crate::oracle::{check_batch, Oracle};
use crate::prediction::Prediction;
use crate::schedule::NoiseLevel;
use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, CudaViewMut,
    DeviceRepr, LaunchConfig, PinnedHostSlice, PushKernelArg, ValidAsZeroBits,
};
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// The kernel sources.
pub const GMM_SOURCE: &str = include_str!("../kernels/gmm.cu");
pub const MLP_SOURCE: &str = include_str!("../kernels/mlp.cu");

/// Checks that the CUDA driver, NVRTC and cuBLAS libraries can be loaded (without touching the
/// device); the error names the first missing one.
pub fn probe() -> std::result::Result<(), String> {
    for (lib, what) in [("cuda", "driver"), ("nvrtc", "NVRTC"), ("cublas", "cuBLAS")] {
        let mut candidates = cudarc::get_lib_name_candidates(lib);
        candidates.dedup();
        // SAFETY: loading a shared library runs its initializers; these are NVIDIA's CUDA
        // libraries, which cudarc would load next anyway.
        let found = candidates
            .iter()
            .any(|name| unsafe { libloading::Library::new(name) }.is_ok());
        if !found {
            return Err(format!(
                "the CUDA {what} library is not installed (none of {} loads)",
                candidates.join(", ")
            ));
        }
    }
    Ok(())
}

fn gpu_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Domain(format!("CUDA: {what}: {e}"))
}

/// A device with the compiled kernels and a cuBLAS handle.
pub struct Gpu {
    pub name: String,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    gmm: Arc<CudaModule>,
    mlp: Arc<CudaModule>,
}

impl Gpu {
    /// Device `ordinal`, after [`probe`].
    pub fn new(ordinal: usize) -> Result<Arc<Gpu>> {
        probe().map_err(|e| gpu_err("unavailable", e))?;
        let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|_| gpu_err("unavailable", "the driver panicked on initialization"))?
            .map_err(|e| gpu_err("no usable device", e))?;
        let name = ctx.name().map_err(|e| gpu_err("device name", e))?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| gpu_err("cuBLAS", e))?;
        let compile = |name: &str, src: &str| {
            let ptx = cudarc::nvrtc::compile_ptx(src)
                .map_err(|e| gpu_err(&format!("compiling kernels/{name}"), e))?;
            ctx.load_module(ptx)
                .map_err(|e| gpu_err(&format!("loading kernels/{name}"), e))
        };
        Ok(Arc::new(Gpu {
            name,
            gmm: compile("gmm.cu", GMM_SOURCE)?,
            mlp: compile("mlp.cu", MLP_SOURCE)?,
            ctx,
            stream,
            blas,
        }))
    }

    /// The GPU if one is usable; otherwise `None`, after one line on stderr with the reason.
    pub fn detect() -> Option<Arc<Gpu>> {
        match Gpu::new(0) {
            Ok(gpu) => Some(gpu),
            Err(e) => {
                eprintln!("{e}; using the CPU");
                None
            }
        }
    }

    fn function(&self, module: &Arc<CudaModule>, name: &str) -> Result<CudaFunction> {
        module
            .load_function(name)
            .map_err(|e| gpu_err(&format!("kernel {name}"), e))
    }

    fn upload<T: Real>(&self, v: &[f64]) -> Result<CudaSlice<T>> {
        let host: Vec<T> = v.iter().map(|&x| T::from_f64(x)).collect();
        self.stream
            .clone_htod(&host)
            .map_err(|e| gpu_err("copy to device", e))
    }
}

/// float32 or float64 on the device.
pub trait Real: DeviceRepr + ValidAsZeroBits + Copy + Send + Sync + 'static {
    const SUFFIX: &'static str;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
}

impl Real for f32 {
    const SUFFIX: &'static str = "f32";
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    const SUFFIX: &'static str = "f64";
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
}

fn grid(n: usize) -> LaunchConfig {
    LaunchConfig::for_num_elems(n as u32)
}

/// Buffers kept across calls and grown on demand: a page-locked host staging buffer and `N`
/// device buffers, so that a call allocates nothing once the batch size has been seen.
struct Scratch<T: Real, const N: usize> {
    host: Option<PinnedHostSlice<T>>,
    dev: [Option<CudaSlice<T>>; N],
}

impl<T: Real, const N: usize> Scratch<T, N> {
    fn new() -> Self {
        Scratch {
            host: None,
            dev: std::array::from_fn(|_| None),
        }
    }

    /// At least `host_len` staging entries and `lens[i]` entries in device buffer i.
    #[allow(clippy::type_complexity)]
    fn ensure(
        &mut self,
        gpu: &Gpu,
        host_len: usize,
        lens: [usize; N],
    ) -> Result<(&mut [T], [&mut CudaSlice<T>; N])> {
        if self.host.as_ref().is_none_or(|h| h.len() < host_len) {
            self.host = None;
            // SAFETY: page-locked memory of plain numbers; every entry read was written first
            // (upload converts into it, download copies into it before the host reads).
            let host = unsafe { gpu.ctx.alloc_pinned_with_flags::<T>(host_len.max(1), 0) }
                .map_err(|e| gpu_err("pinned alloc", e))?;
            self.host = Some(host);
        }
        for (slot, len) in self.dev.iter_mut().zip(lens) {
            if slot.as_ref().is_none_or(|s| s.len() < len) {
                *slot = None;
                let buf = gpu
                    .stream
                    .alloc_zeros::<T>(len.max(1))
                    .map_err(|e| gpu_err("alloc", e))?;
                *slot = Some(buf);
            }
        }
        let host = self
            .host
            .as_mut()
            .expect("allocated above")
            .as_mut_slice()
            .map_err(|e| gpu_err("pinned buffer", e))?;
        Ok((
            host,
            self.dev
                .each_mut()
                .map(|s| s.as_mut().expect("allocated above")),
        ))
    }
}

const PAR_CHUNK: usize = 1 << 14;

impl Gpu {
    /// x (f64, any layout) into the first x.len() entries of `dst`, through the staging buffer.
    fn upload_rows<T: Real>(
        &self,
        x: &ArrayView2<f64>,
        host: &mut [T],
        dst: &mut CudaSlice<T>,
    ) -> Result<()> {
        let x = x.as_standard_layout();
        let src = x.as_slice().expect("standard layout");
        let host = &mut host[..src.len()];
        host.par_chunks_mut(PAR_CHUNK)
            .zip(src.par_chunks(PAR_CHUNK))
            .for_each(|(h, s)| h.iter_mut().zip(s).for_each(|(h, &v)| *h = T::from_f64(v)));
        self.stream
            .memcpy_htod(host, &mut dst.slice_mut(..src.len()))
            .map_err(|e| gpu_err("copy to device", e))
    }

    /// The first out.len() entries of `src` into `out`, through the staging buffer.
    fn download_rows<T: Real>(
        &self,
        src: &CudaSlice<T>,
        host: &mut [T],
        out: &mut ArrayViewMut2<f64>,
    ) -> Result<()> {
        let host = &mut host[..out.len()];
        self.stream
            .memcpy_dtoh(&src.slice(..out.len()), host)
            .map_err(|e| gpu_err("copy to host", e))?;
        self.stream
            .synchronize()
            .map_err(|e| gpu_err("synchronize", e))?;
        match out.as_slice_mut() {
            Some(o) => o
                .par_chunks_mut(PAR_CHUNK)
                .zip(host.par_chunks(PAR_CHUNK))
                .for_each(|(o, h)| o.iter_mut().zip(h).for_each(|(o, h)| *o = h.to_f64())),
            None => out
                .iter_mut()
                .zip(host.iter())
                .for_each(|(o, h)| *o = h.to_f64()),
        }
        Ok(())
    }

    /// C = op(A) op(B) (+ beta C) in cuBLAS's column-major terms.
    #[allow(clippy::too_many_arguments)]
    fn gemm<T: Real>(
        &self,
        (ta, tb): (bool, bool),
        (m, n, k): (usize, usize, usize),
        alpha: f64,
        (a, lda): (&CudaView<T>, usize),
        (b, ldb): (&CudaView<T>, usize),
        beta: f64,
        (c, ldc): (&mut CudaViewMut<T>, usize),
    ) -> Result<()>
    where
        CudaBlas: Gemm<T>,
    {
        let op = |t| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let cfg = GemmConfig {
            transa: op(ta),
            transb: op(tb),
            m: m as i32,
            n: n as i32,
            k: k as i32,
            alpha: T::from_f64(alpha),
            lda: lda as i32,
            ldb: ldb as i32,
            beta: T::from_f64(beta),
            ldc: ldc as i32,
        };
        // SAFETY: every caller passes views holding the lda x (k or m), ldb x (n or k) and
        // ldc x n column-major entries that this configuration reads and writes.
        unsafe { self.blas.gemm(cfg, a, b, c) }.map_err(|e| gpu_err("cuBLAS gemm", e))
    }
}

/// Rows of mixture work per pass, so that the n x Kd intermediate stays near 2^24 entries.
fn mixture_chunk(n: usize, kd: usize) -> usize {
    ((1usize << 24) / kd).clamp(1, n.max(1))
}

/// The exact mixture on the GPU (`kernels/gmm.cu`): per pass of rows, Z = X [U_1 .. U_K]
/// (GEMM), the component log-likelihoods and responsibilities (element-wise kernels), then
/// out = G [U_1 .. U_K]^T + a R M (two GEMMs); every prediction type is a x0_hat + b score.
pub struct GpuMixture<T: Real> {
    gpu: Arc<Gpu>,
    d: usize,
    k: usize,
    ucat: CudaSlice<T>,
    mt: CudaSlice<T>,
    means: CudaSlice<T>,
    lam: CudaSlice<T>,
    logw: CudaSlice<T>,
    loglik: CudaFunction,
    gain: CudaFunction,
    scratch: Mutex<Scratch<T, 5>>,
}

impl<T: Real> GpuMixture<T> {
    pub fn new(gpu: Arc<Gpu>, mixture: &GaussianMixture) -> Result<Self> {
        let (d, k) = (mixture.dim(), mixture.n_components());
        let mut ucat = vec![0.0; d * k * d];
        let (mut mt, mut means, mut lam, mut logw) = (vec![], vec![], vec![], vec![]);
        for c in 0..k {
            let (u, l) = mixture.eigen(c);
            let mu = mixture.mean(c);
            for i in 0..d {
                for j in 0..d {
                    ucat[i * k * d + c * d + j] = u[[i, j]];
                }
            }
            mt.extend(u.t().dot(&mu).iter());
            means.extend(mu.iter());
            lam.extend(l.iter());
            logw.push(mixture.weights()[c].ln());
        }
        Ok(GpuMixture {
            ucat: gpu.upload(&ucat)?,
            mt: gpu.upload(&mt)?,
            means: gpu.upload(&means)?,
            lam: gpu.upload(&lam)?,
            logw: gpu.upload(&logw)?,
            loglik: gpu.function(&gpu.gmm, &format!("gmm_loglik_{}", T::SUFFIX))?,
            gain: gpu.function(&gpu.gmm, &format!("gmm_gain_{}", T::SUFFIX))?,
            gpu,
            d,
            k,
            scratch: Mutex::new(Scratch::new()),
        })
    }
}

impl<T: Real> Oracle for GpuMixture<T>
where
    CudaBlas: Gemm<T>,
{
    fn dim(&self) -> usize {
        self.d
    }
    fn native(&self) -> Prediction {
        Prediction::X0
    }
    fn eval(&self, x: ArrayView2<f64>, at: &NoiseLevel, out: ArrayViewMut2<f64>) -> Result<()> {
        self.predict(Prediction::X0, x, at, out)
    }
    fn predict(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        mut out: ArrayViewMut2<f64>,
    ) -> Result<()> {
        check_batch(self.d, &x, &out)?;
        let (d, k, n) = (self.d, self.k, x.nrows());
        let (a, b) = kind.coefficients(at);
        let chunk = mixture_chunk(n, k * d);
        let mut scratch = self.scratch.lock().expect("lock");
        let gpu = &self.gpu;
        let (host, [xs, ys, z, logp, r]) = scratch.ensure(
            gpu,
            n * d,
            [n * d, n * d, chunk * k * d, chunk * k, chunk * k],
        )?;
        gpu.upload_rows(&x, host, xs)?;
        let [alpha, sigma, at_, bt_] = [at.alpha, at.sigma, a, b].map(T::from_f64);
        let (di, ki) = (d as i32, k as i32);
        for r0 in (0..n).step_by(chunk) {
            let rows = chunk.min(n - r0);
            let ni = rows as i32;
            let kd = k * d;
            gpu.gemm(
                (false, false),
                (kd, rows, d),
                1.0,
                (&self.ucat.slice(..), kd),
                (&xs.slice(r0 * d..(r0 + rows) * d), d),
                0.0,
                (&mut z.slice_mut(..rows * kd), kd),
            )?;
            let mut launch = gpu.stream.launch_builder(&self.loglik);
            launch
                .arg(&*z)
                .arg(&self.mt)
                .arg(&self.lam)
                .arg(&self.logw)
                .arg(&ni)
                .arg(&di)
                .arg(&ki)
                .arg(&alpha)
                .arg(&sigma)
                .arg(&mut *logp);
            // SAFETY: matches `gmm_loglik_{f32,f64}`; z holds rows x Kd, logp rows x K entries.
            unsafe { launch.launch(grid(rows * k)) }.map_err(|e| gpu_err("gmm_loglik", e))?;
            let mut launch = gpu.stream.launch_builder(&self.gain);
            launch
                .arg(&mut *z)
                .arg(&self.mt)
                .arg(&self.lam)
                .arg(&*logp)
                .arg(&ni)
                .arg(&di)
                .arg(&ki)
                .arg(&alpha)
                .arg(&sigma)
                .arg(&at_)
                .arg(&bt_)
                .arg(&mut *r);
            // SAFETY: matches `gmm_gain_{f32,f64}`; z holds rows x Kd, logp and r rows x K.
            unsafe { launch.launch(grid(rows * k)) }.map_err(|e| gpu_err("gmm_gain", e))?;
            let mut y = ys.slice_mut(r0 * d..(r0 + rows) * d);
            gpu.gemm(
                (true, false),
                (d, rows, kd),
                1.0,
                (&self.ucat.slice(..), kd),
                (&z.slice(..rows * kd), kd),
                0.0,
                (&mut y, d),
            )?;
            gpu.gemm(
                (false, false),
                (d, rows, k),
                a,
                (&self.means.slice(..), d),
                (&r.slice(..rows * k), k),
                1.0,
                (&mut y, d),
            )?;
        }
        gpu.download_rows(ys, host, &mut out)
    }
}

/// The MLP on the GPU: embedding kernel, then per layer a cuBLAS GEMM and the fused bias + SiLU.
pub struct GpuMlp<T: Real> {
    gpu: Arc<Gpu>,
    net: Mlp,
    weights: Vec<(CudaSlice<T>, CudaSlice<T>)>,
    omegas: CudaSlice<T>,
    /// The widest activation (input or layer output): the ping-pong buffers' row width.
    widest: usize,
    embed: CudaFunction,
    bias_act: CudaFunction,
    scratch: Mutex<Scratch<T, 3>>,
}

impl<T: Real> GpuMlp<T>
where
    CudaBlas: Gemm<T>,
{
    pub fn new(gpu: Arc<Gpu>, net: &Mlp) -> Result<Self> {
        if net.config.times != 1 {
            return Err(Error::Domain(
                "a two-time network (a flow map) has no CUDA path".into(),
            ));
        }
        let weights = (0..net.layers.len())
            .map(|l| {
                let w: Vec<f64> = net.weight(l).iter().copied().collect();
                let b: Vec<f64> = net.bias(l).to_vec();
                Ok((gpu.upload(&w)?, gpu.upload(&b)?))
            })
            .collect::<Result<_>>()?;
        let widest = net
            .layers
            .iter()
            .map(|l| l.fan_out)
            .chain([net.config.input_width()])
            .max()
            .unwrap_or(1);
        Ok(GpuMlp {
            omegas: gpu.upload(&net.config.omegas())?,
            widest,
            embed: gpu.function(&gpu.mlp, &format!("embed_{}", T::SUFFIX))?,
            bias_act: gpu.function(&gpu.mlp, &format!("bias_act_{}", T::SUFFIX))?,
            weights,
            net: net.clone(),
            gpu,
            scratch: Mutex::new(Scratch::new()),
        })
    }
}

impl<T: Real> Oracle for GpuMlp<T>
where
    CudaBlas: Gemm<T>,
{
    fn dim(&self) -> usize {
        self.net.config.dim
    }
    fn native(&self) -> Prediction {
        self.net.config.prediction
    }
    fn eval(&self, x: ArrayView2<f64>, at: &NoiseLevel, mut out: ArrayViewMut2<f64>) -> Result<()> {
        let c = &self.net.config;
        check_batch(c.dim, &x, &out)?;
        let n = x.nrows();
        let widest = self.widest;
        let mut scratch = self.scratch.lock().expect("lock");
        let gpu = &self.gpu;
        let (host, [xs, mut h, mut z]) =
            scratch.ensure(gpu, n * c.dim, [n * c.dim, n * widest, n * widest])?;
        gpu.upload_rows(&x, host, xs)?;
        let width_in = c.input_width();
        let s = T::from_f64(c.time_input.of(at));
        let (ni, di, mi) = (n as i32, c.dim as i32, (c.time_features / 2) as i32);
        let mut launch = gpu.stream.launch_builder(&self.embed);
        launch
            .arg(&*xs)
            .arg(&self.omegas)
            .arg(&s)
            .arg(&ni)
            .arg(&di)
            .arg(&mi)
            .arg(&mut *h);
        // SAFETY: matches `embed_{f32,f64}`; h holds n x (d + 2m) entries, x n x d, omega m.
        unsafe { launch.launch(grid(n * width_in)) }.map_err(|e| gpu_err("embed kernel", e))?;
        let last = self.net.layers.len() - 1;
        for (l, (w, b)) in self.weights.iter().enumerate() {
            let layer = self.net.layers[l];
            gpu.gemm(
                (true, false),
                (layer.fan_out, n, layer.fan_in),
                1.0,
                (&w.slice(..), layer.fan_in),
                (&h.slice(..n * layer.fan_in), layer.fan_in),
                0.0,
                (&mut z.slice_mut(..n * layer.fan_out), layer.fan_out),
            )?;
            let (wi, silu) = (layer.fan_out as i32, i32::from(l < last));
            let mut launch = gpu.stream.launch_builder(&self.bias_act);
            launch.arg(&mut *z).arg(b).arg(&ni).arg(&wi).arg(&silu);
            // SAFETY: matches `bias_act_{f32,f64}`; z holds n x fan_out entries, b fan_out.
            unsafe { launch.launch(grid(n * layer.fan_out)) }
                .map_err(|e| gpu_err("bias_act kernel", e))?;
            std::mem::swap(&mut h, &mut z);
        }
        gpu.download_rows(h, host, &mut out)
    }
}

/// A CPU oracle that has a GPU version: the exact mixture or the MLP.
#[derive(Clone, Copy)]
pub enum Host<'a> {
    Mixture(&'a GaussianMixture),
    Mlp(&'a Mlp),
}

impl Host<'_> {
    /// Its GPU version in precision `T`.
    pub fn to_gpu<T: Real>(self, gpu: Arc<Gpu>) -> Result<Box<dyn Oracle>>
    where
        CudaBlas: Gemm<T>,
    {
        Ok(match self {
            Host::Mixture(m) => Box::new(GpuMixture::<T>::new(gpu, m)?),
            Host::Mlp(n) => Box::new(GpuMlp::<T>::new(gpu, n)?),
        })
    }
}

/// Synchronizes the device (for timing).
pub fn synchronize(gpu: &Gpu) -> Result<()> {
    gpu.stream
        .synchronize()
        .map_err(|e| gpu_err("synchronize", e))
}
