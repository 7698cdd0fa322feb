"""How much one epoch of the cnn (WORKLOADS.md's cnn-fmnist: Adam 1e-3, batch 128, shuffled,
the last partial batch kept, as DataLoader's default) varies with the seed in PyTorch:
test accuracy after the epoch, and after its last 3 steps removed, for seeds 0..N-1.
Backs the note in docs/benchmarks.md on `anvil train --model cnn --epochs 1`'s seed-0
result; not a test.  CPU, fp32.
  python3 bench/cnn_seed_spread.py [N=8]
"""
import gzip
import os
import sys

import numpy as np
import torch

D = os.environ.get("ANVIL_DATA_DIR", "/usr/share/datasets/fashion-mnist")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 8


def idx(name):
    d = gzip.open(os.path.join(D, name)).read()
    nd = d[3]
    dims = [int.from_bytes(d[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(d[4 + 4 * nd:], dtype=np.uint8).reshape(dims)


X = torch.tensor(idx("train-images-idx3-ubyte.gz")).float().div(255).view(-1, 1, 28, 28)
Y = torch.tensor(idx("train-labels-idx1-ubyte.gz")).long()
Xt = torch.tensor(idx("t10k-images-idx3-ubyte.gz")).float().div(255).view(-1, 1, 28, 28)
Yt = torch.tensor(idx("t10k-labels-idx1-ubyte.gz")).long()
nn = torch.nn


def accuracy(m):
    with torch.no_grad():
        return (m(Xt).argmax(1) == Yt).float().mean().item()


for seed in range(N):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1),
                      nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    order = torch.randperm(60000)
    starts = list(range(0, 60000, 128))
    before = None
    for k, i in enumerate(starts):
        if k == len(starts) - 3:
            before = accuracy(m)
        b = order[i:i + 128]
        loss = torch.nn.functional.cross_entropy(m(X[b]), Y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"seed {seed}: accuracy after the epoch {accuracy(m):.4f} (3 steps before its end {before:.4f})",
          flush=True)
