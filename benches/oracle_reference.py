"""NumPy and PyTorch (CPU, float64) versions of pfode's Gaussian-mixture denoiser, for the
throughput comparison in `bench_oracle --python PY`. Not part of CI.

Same formulas as pfode: with Sigma_k = U_k diag(l_k) U_k^T and D_k = alpha^2 l_k + sigma^2,
z_k = (x - alpha mu_k) U_k (one matrix product per component), log-responsibilities
ln w_k - 1/2 sum ln D_k - 1/2 sum z_k^2 / D_k (log-sum-exp over k), and
x0_hat = sum_k r_k (mu_k + (z_k * alpha l_k / D_k) U_k^T) (a second product per component).

Usage: python oracle_reference.py PROBLEM.json X.npy PFODE_X0.npy REPEATS ALPHA SIGMA THREADS
X.npy holds the points (the same draws of p_t that pfode is timed on), PFODE_X0.npy pfode's x0_hat
at them. Prints one JSON line {"numpy_s": median seconds per call, "torch_s": ...,
"max_abs_diff": NumPy vs PyTorch, "max_abs_diff_vs_pfode": NumPy vs pfode, ...}.
"""
import json
import sys
import time

import numpy as np


def load(path):
    spec = json.load(open(path))
    w = np.array(spec["weights"], dtype=np.float64)
    mu = np.array(spec["means"], dtype=np.float64)
    covs = np.array(spec["covs"], dtype=np.float64)
    l, u = np.linalg.eigh(covs)
    return w, mu, u, l


def x0_numpy(x, w, mu, u, l, alpha, sigma):
    d = alpha * alpha * l + sigma * sigma  # (K, d)
    logits = []
    preds = []
    for k in range(len(w)):
        z = (x - alpha * mu[k]) @ u[k]
        logits.append(np.log(w[k]) - 0.5 * np.log(d[k]).sum() - 0.5 * (z * z / d[k]).sum(axis=1))
        preds.append(mu[k] + (z * (alpha * l[k] / d[k])) @ u[k].T)
    logits = np.stack(logits, axis=1)
    logits -= logits.max(axis=1, keepdims=True)
    r = np.exp(logits)
    r /= r.sum(axis=1, keepdims=True)
    return sum(r[:, k : k + 1] * preds[k] for k in range(len(w)))


def x0_torch(torch, x, w, mu, u, l, alpha, sigma):
    d = alpha * alpha * l + sigma * sigma
    z = torch.einsum("nd,kde->kne", x, u) - alpha * torch.einsum("kd,kde->ke", mu, u)[:, None, :]
    logits = torch.log(w)[:, None] - 0.5 * torch.log(d).sum(1)[:, None] - 0.5 * (z * z / d[:, None, :]).sum(2)
    r = torch.softmax(logits, dim=0)
    pred = mu[:, None, :] + torch.einsum("kne,kde->knd", z * (alpha * l / d)[:, None, :], u)
    return (r[:, :, None] * pred).sum(0)


def timed(f, repeats):
    f()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    path, x_path, pfode_path, repeats, alpha, sigma, threads = sys.argv[1:8]
    repeats, alpha, sigma, threads = int(repeats), float(alpha), float(sigma), int(threads)
    w, mu, u, l = load(path)
    x = np.load(x_path)
    out = {"numpy_s": timed(lambda: x0_numpy(x, w, mu, u, l, alpha, sigma), repeats)}
    ref = x0_numpy(x, w, mu, u, l, alpha, sigma)
    out["max_abs_diff_vs_pfode"] = float(np.abs(np.load(pfode_path) - ref).max())
    try:
        import torch

        torch.set_num_threads(threads)
        tx, tw, tmu, tu, tl = (torch.from_numpy(a) for a in (x, w, mu, u, l))
        with torch.no_grad():
            out["torch_s"] = timed(lambda: x0_torch(torch, tx, tw, tmu, tu, tl, alpha, sigma), repeats)
            out["max_abs_diff"] = float(np.abs(x0_torch(torch, tx, tw, tmu, tu, tl, alpha, sigma).numpy() - ref).max())
        out["torch_version"] = torch.__version__
    except ImportError:
        out["torch_s"] = None
    out["numpy_version"] = np.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
