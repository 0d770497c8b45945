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
//! A batch is converted to the device precision, copied to the device, evaluated, and copied
//! back into the f64 output. The GEMM in row-major terms: Z (n x out) = H (n x in) W^T with W
//! (out x in) row-major, i.e. column-major Z^T = W H^T: `gemm(T, N, m = out, n, k = in)`.

use crate::error::{Error, Result};
use crate::gmm::GaussianMixture;
use crate::nn::Mlp;
use crate::oracle::{check_batch, Oracle};
use crate::prediction::Prediction;
use crate::schedule::NoiseLevel;
use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};
use ndarray::{ArrayView2, ArrayViewMut2};
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

    fn download<T: Real>(&self, v: &CudaSlice<T>, out: &mut ArrayViewMut2<f64>) -> Result<()> {
        let host = self
            .stream
            .clone_dtoh(v)
            .map_err(|e| gpu_err("copy to host", e))?;
        out.iter_mut().zip(host).for_each(|(o, h)| *o = h.to_f64());
        Ok(())
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

fn rows(x: &ArrayView2<f64>) -> Vec<f64> {
    x.iter().copied().collect()
}

/// The exact mixture on the GPU (one thread per row, `kernels/gmm.cu`); every prediction type is
/// computed directly as a x0_hat + b score.
pub struct GpuMixture<T: Real> {
    gpu: Arc<Gpu>,
    d: usize,
    k: usize,
    mu: CudaSlice<T>,
    u: CudaSlice<T>,
    lam: CudaSlice<T>,
    logw: CudaSlice<T>,
    kernel: CudaFunction,
    lock: Mutex<()>,
}

impl<T: Real> GpuMixture<T> {
    pub fn new(gpu: Arc<Gpu>, mixture: &GaussianMixture) -> Result<Self> {
        let (d, k) = (mixture.dim(), mixture.n_components());
        if d > 64 || k > 64 {
            return Err(Error::Domain(format!(
                "CUDA: the mixture kernel handles d <= 64 and K <= 64, got d = {d}, K = {k}"
            )));
        }
        let (mut mu, mut u, mut lam, mut logw) = (vec![], vec![], vec![], vec![]);
        for c in 0..k {
            let (vectors, values) = mixture.eigen(c);
            mu.extend(mixture.mean(c).iter());
            u.extend(vectors.iter());
            lam.extend(values.iter());
            logw.push(mixture.weights()[c].ln());
        }
        Ok(GpuMixture {
            mu: gpu.upload(&mu)?,
            u: gpu.upload(&u)?,
            lam: gpu.upload(&lam)?,
            logw: gpu.upload(&logw)?,
            kernel: gpu.function(&gpu.gmm, &format!("gmm_{}", T::SUFFIX))?,
            gpu,
            d,
            k,
            lock: Mutex::new(()),
        })
    }
}

impl<T: Real> Oracle for GpuMixture<T> {
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
        let _guard = self.lock.lock().expect("lock");
        let (a, b) = kind.coefficients(at);
        let n = x.nrows();
        let gpu = &self.gpu;
        let xs = gpu.upload::<T>(&rows(&x))?;
        let mut ys = gpu
            .stream
            .alloc_zeros::<T>(n * self.d)
            .map_err(|e| gpu_err("alloc", e))?;
        let (ni, di, ki) = (n as i32, self.d as i32, self.k as i32);
        let [alpha, sigma, a, b] = [at.alpha, at.sigma, a, b].map(T::from_f64);
        let mut launch = gpu.stream.launch_builder(&self.kernel);
        launch
            .arg(&xs)
            .arg(&self.mu)
            .arg(&self.u)
            .arg(&self.lam)
            .arg(&self.logw)
            .arg(&ni)
            .arg(&di)
            .arg(&ki)
            .arg(&alpha)
            .arg(&sigma)
            .arg(&a)
            .arg(&b)
            .arg(&mut ys);
        // SAFETY: the argument list matches `gmm_{f32,f64}` in kernels/gmm.cu and every buffer
        // holds the n x d, K x d, K x d x d entries the kernel reads and writes.
        unsafe { launch.launch(grid(n)) }.map_err(|e| gpu_err("gmm kernel", e))?;
        gpu.download(&ys, &mut out)
    }
}

/// The MLP on the GPU: embedding kernel, then per layer a cuBLAS GEMM and the fused bias + SiLU.
pub struct GpuMlp<T: Real> {
    gpu: Arc<Gpu>,
    net: Mlp,
    weights: Vec<(CudaSlice<T>, CudaSlice<T>)>,
    omegas: CudaSlice<T>,
    embed: CudaFunction,
    bias_act: CudaFunction,
    lock: Mutex<()>,
}

impl<T: Real> GpuMlp<T>
where
    CudaBlas: Gemm<T>,
{
    pub fn new(gpu: Arc<Gpu>, net: &Mlp) -> Result<Self> {
        let weights = (0..net.layers.len())
            .map(|l| {
                let w: Vec<f64> = net.weight(l).iter().copied().collect();
                let b: Vec<f64> = net.bias(l).to_vec();
                Ok((gpu.upload(&w)?, gpu.upload(&b)?))
            })
            .collect::<Result<_>>()?;
        Ok(GpuMlp {
            omegas: gpu.upload(&net.config.omegas())?,
            embed: gpu.function(&gpu.mlp, &format!("embed_{}", T::SUFFIX))?,
            bias_act: gpu.function(&gpu.mlp, &format!("bias_act_{}", T::SUFFIX))?,
            weights,
            net: net.clone(),
            gpu,
            lock: Mutex::new(()),
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
        let _guard = self.lock.lock().expect("lock");
        let gpu = &self.gpu;
        let n = x.nrows();
        let xs = gpu.upload::<T>(&rows(&x))?;
        let width_in = c.input_width();
        let mut h = gpu
            .stream
            .alloc_zeros::<T>(n * width_in)
            .map_err(|e| gpu_err("alloc", e))?;
        let s = T::from_f64(c.time_input.of(at));
        let (ni, di, mi) = (n as i32, c.dim as i32, (c.time_features / 2) as i32);
        let mut launch = gpu.stream.launch_builder(&self.embed);
        launch
            .arg(&xs)
            .arg(&self.omegas)
            .arg(&s)
            .arg(&ni)
            .arg(&di)
            .arg(&mi)
            .arg(&mut h);
        // SAFETY: matches `embed_{f32,f64}`; h holds n x (d + 2m) entries, x n x d, omega m.
        unsafe { launch.launch(grid(n * width_in)) }.map_err(|e| gpu_err("embed kernel", e))?;
        let last = self.net.layers.len() - 1;
        for (l, (w, b)) in self.weights.iter().enumerate() {
            let layer = self.net.layers[l];
            let mut z = gpu
                .stream
                .alloc_zeros::<T>(n * layer.fan_out)
                .map_err(|e| gpu_err("alloc", e))?;
            let cfg = GemmConfig {
                transa: cublasOperation_t::CUBLAS_OP_T,
                transb: cublasOperation_t::CUBLAS_OP_N,
                m: layer.fan_out as i32,
                n: n as i32,
                k: layer.fan_in as i32,
                alpha: T::from_f64(1.0),
                lda: layer.fan_in as i32,
                ldb: layer.fan_in as i32,
                beta: T::from_f64(0.0),
                ldc: layer.fan_out as i32,
            };
            // SAFETY: w is fan_out x fan_in, h is n x fan_in and z n x fan_out (row-major), the
            // shapes the configuration describes (module doc).
            unsafe { gpu.blas.gemm(cfg, w, &h, &mut z) }.map_err(|e| gpu_err("cuBLAS gemm", e))?;
            let (wi, silu) = (layer.fan_out as i32, i32::from(l < last));
            let mut launch = gpu.stream.launch_builder(&self.bias_act);
            launch.arg(&mut z).arg(b).arg(&ni).arg(&wi).arg(&silu);
            // SAFETY: matches `bias_act_{f32,f64}`; z holds n x fan_out entries, b fan_out.
            unsafe { launch.launch(grid(n * layer.fan_out)) }
                .map_err(|e| gpu_err("bias_act kernel", e))?;
            h = z;
        }
        gpu.download(&h, &mut out)
    }
}

/// Synchronizes the device (for timing).
pub fn synchronize(gpu: &Gpu) -> Result<()> {
    gpu.stream
        .synchronize()
        .map_err(|e| gpu_err("synchronize", e))
}
