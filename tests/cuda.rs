//! GPU oracles against their CPU versions (feature `cuda`). Without the feature, or without a
//! usable GPU, the tests print why they skip.

#[cfg(not(feature = "cuda"))]
#[test]
fn gpu_tests_need_the_cuda_feature() {
    println!("skipping the GPU tests: built without the `cuda` feature (cargo test --release --features cuda)");
}

#[cfg(feature = "cuda")]
mod gpu {
    use ndarray::Array2;
    use pfode::cuda::{Gpu, GpuMixture, GpuMlp};
    use pfode::nn::{Mlp, MlpConfig, TimeInput};
    use pfode::{problems, schedule, Oracle, Prediction};
    use std::sync::Arc;

    fn gpu() -> Option<Arc<Gpu>> {
        match Gpu::new(0) {
            Ok(g) => Some(g),
            Err(e) => {
                println!("skipping: {e}");
                None
            }
        }
    }

    /// max |a - b| / RMS(b).
    fn rel(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        let scale = (b.iter().map(|v| v * v).sum::<f64>() / b.len() as f64).sqrt();
        (a - b).iter().fold(0.0f64, |m, v| m.max(v.abs())) / scale
    }

    fn compare(
        cpu: &dyn Oracle,
        gpu: &dyn Oracle,
        x_of: impl Fn(&pfode::NoiseLevel) -> Array2<f64>,
    ) -> f64 {
        let vp = schedule::parse("vp-linear").unwrap();
        let mut worst: f64 = 0.0;
        for t in [0.9, 0.3, 0.05, 0.002] {
            let at = vp.level(t);
            let x = x_of(&at);
            for kind in Prediction::ALL {
                let (mut a, mut b) = (Array2::zeros(x.dim()), Array2::zeros(x.dim()));
                gpu.predict(kind, x.view(), &at, a.view_mut()).unwrap();
                cpu.predict(kind, x.view(), &at, b.view_mut()).unwrap();
                worst = worst.max(rel(&a, &b));
            }
        }
        worst
    }

    #[test]
    fn mixture_matches_cpu() {
        let Some(gpu) = gpu() else { return };
        for name in ["ring2d", "aniso16", "mix64"] {
            let m = problems::load(name).unwrap();
            let sample = |at: &pfode::NoiseLevel| m.sample_pt(3000, at, 4);
            let e64 = compare(
                &m,
                &GpuMixture::<f64>::new(gpu.clone(), &m).unwrap(),
                sample,
            );
            let e32 = compare(
                &m,
                &GpuMixture::<f32>::new(gpu.clone(), &m).unwrap(),
                sample,
            );
            println!("{name} on {}: f64 {e64:.2e}, f32 {e32:.2e}", gpu.name);
            assert!(e64 < 1e-9, "{name} f64: {e64:e}");
            assert!(e32 < 2e-3, "{name} f32: {e32:e}");
        }
    }

    #[test]
    fn mlp_matches_cpu() {
        let Some(gpu) = gpu() else { return };
        for (d, width, depth) in [(2, 64, 3), (16, 128, 3), (64, 512, 4)] {
            let config = MlpConfig {
                dim: d,
                width,
                depth,
                time_input: TimeInput::LogSigma,
                time_features: 16,
                omega_max: 30.0,
                prediction: Prediction::V,
                times: 1,
            };
            let net = Mlp::init(config, 3).unwrap();
            let x = pfode::rng::standard_normal(2000, d, 1, 0);
            let e64 = compare(
                &net,
                &GpuMlp::<f64>::new(gpu.clone(), &net).unwrap(),
                |_| x.clone(),
            );
            let e32 = compare(
                &net,
                &GpuMlp::<f32>::new(gpu.clone(), &net).unwrap(),
                |_| x.clone(),
            );
            println!(
                "mlp d={d} width={width} on {}: f64 {e64:.2e}, f32 {e32:.2e}",
                gpu.name
            );
            assert!(e64 < 1e-11, "f64: {e64:e}");
            assert!(e32 < 1e-4, "f32: {e32:e}");
        }
    }

    /// A whole solver run on the GPU oracles (float64) equals the CPU run: the solvers see only
    /// the `Oracle` trait. ring2d's trained network and the aniso16 mixture, dpm-solver++ (3M)
    /// over 10 logSNR steps from 500 exact draws of p_T.
    #[test]
    fn solver_runs_match_cpu() {
        use pfode::grid::Grid;
        use pfode::nn::weights;
        use pfode::solver::{self, Env, Model};
        let Some(gpu) = gpu() else { return };
        let run = |oracle: &dyn Oracle, schedule: &dyn pfode::Schedule, x: &Array2<f64>| {
            let env = Env {
                schedule,
                mixture: None,
                noise_seed: 0,
            };
            let mut built = solver::build("dpm-solver++:order=3", &env).unwrap();
            let grid = Grid::parse("logsnr:steps=10", schedule).unwrap();
            let model = Model::new(oracle, schedule);
            solver::integrate(built.solver.as_mut(), &model, &grid, x.view()).unwrap()
        };
        let loaded = weights::load("results/models/ring2d.safetensors").unwrap();
        let schedule = schedule::parse(loaded.schedule().unwrap()).unwrap();
        let ring = problems::load("ring2d").unwrap();
        let x = ring.sample_pt(500, &schedule.level(schedule.t_max()), 9);
        let cpu = run(&loaded.net, schedule.as_ref(), &x);
        let on_gpu = run(
            &GpuMlp::<f64>::new(gpu.clone(), &loaded.net).unwrap(),
            schedule.as_ref(),
            &x,
        );
        let e_net = rel(&on_gpu, &cpu);
        let aniso = problems::load("aniso16").unwrap();
        let x = aniso.sample_pt(500, &schedule.level(schedule.t_max()), 9);
        let cpu = run(&aniso, schedule.as_ref(), &x);
        let on_gpu = run(
            &GpuMixture::<f64>::new(gpu.clone(), &aniso).unwrap(),
            schedule.as_ref(),
            &x,
        );
        let e_mix = rel(&on_gpu, &cpu);
        println!(
            "solver runs on {}: ring2d net {e_net:.2e}, aniso16 mixture {e_mix:.2e}",
            gpu.name
        );
        assert!(e_net < 1e-10, "{e_net:e}");
        assert!(e_mix < 1e-9, "{e_mix:e}");
    }
}
