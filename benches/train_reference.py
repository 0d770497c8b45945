"""PyTorch (CPU, float64) training step of pfode's two-time flow-map MLP, for the throughput
comparison in `bench_train --python PY`. Not part of CI.

The same network and loss as pfode's `flow_map::distill::regression` with the mean-velocity
parameterisation: h0 = [x, e(s), e(t)] with e(u) = [sin(omega_k u), cos(omega_k u)], omega_k
geometric from 1 to OMEGA_MAX; SiLU hidden layers; Psi = x - (s - t) F; loss mean of
|Psi - y|^2; one Adam step (betas 0.9, 0.999, eps 1e-8) per batch.

Usage: python train_reference.py DIM WIDTH DEPTH TIME_FEATURES OMEGA_MAX BATCH STEPS THREADS
Prints one JSON line {"seconds_per_step": median of 5 timed blocks of STEPS steps, ...}.
"""
import json
import sys
import time

import torch

dim, width, depth, tf = (int(v) for v in sys.argv[1:5])
omega_max = float(sys.argv[5])
batch, steps, threads = (int(v) for v in sys.argv[6:9])
torch.set_num_threads(threads)
torch.manual_seed(0)
dt = torch.float64
m = tf // 2
omegas = torch.tensor([omega_max ** (k / (m - 1)) if m > 1 else 1.0 for k in range(m)], dtype=dt)
layers = [torch.nn.Linear(dim + 2 * tf, width, dtype=dt)]
layers += [torch.nn.Linear(width, width, dtype=dt) for _ in range(depth - 1)]
layers += [torch.nn.Linear(width, dim, dtype=dt)]
params = [p for layer in layers for p in layer.parameters()]
opt = torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)

x = torch.randn(batch, dim, dtype=dt)
y = torch.randn(batch, dim, dtype=dt)
s = torch.rand(batch, 1, dtype=dt) * 0.9 + 0.05
t = s * torch.rand(batch, 1, dtype=dt)


def embed(u):
    return torch.cat([torch.sin(u * omegas), torch.cos(u * omegas)], dim=1)


def step():
    h = torch.cat([x, embed(s), embed(t)], dim=1)
    for layer in layers[:-1]:
        h = torch.nn.functional.silu(layer(h))
    f = layers[-1](h)
    psi = x - (s - t) * f
    loss = ((psi - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


for _ in range(20):
    step()
times = []
for _ in range(5):
    start = time.perf_counter()
    for _ in range(steps):
        step()
    times.append((time.perf_counter() - start) / steps)
times.sort()
print(json.dumps({"seconds_per_step": times[2], "torch": torch.__version__, "threads": threads}))
