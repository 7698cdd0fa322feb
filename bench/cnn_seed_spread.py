"""How much training the cnn (WORKLOADS.md's cnn-fmnist: Adam 1e-3, batch 128, shuffled
anew each epoch, the last partial batch kept, as DataLoader's default) varies with the seed
in PyTorch: test accuracy after each epoch (and, with one epoch, after its last 3 steps
removed), for seeds 0..N-1.  Backs the notes in docs/benchmarks.md on `anvil train --model
cnn`'s seed-0 results; not a test.  fp32 (TF32 off); DEVICE=cuda runs it on the GPU;
MODEL=mlp trains WORKLOADS.md's mlp-small (784-512-512-10, ReLU) the same way instead.
  [DEVICE=cpu|cuda] [MODEL=cnn|mlp] python3 bench/cnn_seed_spread.py [N=8] [EPOCHS=1]
"""
import gzip
import os
import sys

import numpy as np
import torch

D = os.environ.get("ANVIL_DATA_DIR", "/usr/share/datasets/fashion-mnist")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 8
EPOCHS = int(sys.argv[2]) if len(sys.argv) > 2 else 1
DEV = os.environ.get("DEVICE", "cpu")
MODEL = os.environ.get("MODEL", "cnn")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def idx(name):
    d = gzip.open(os.path.join(D, name)).read()
    nd = d[3]
    dims = [int.from_bytes(d[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(d[4 + 4 * nd:], dtype=np.uint8).reshape(dims)


X = torch.tensor(idx("train-images-idx3-ubyte.gz")).float().div(255).view(-1, 1, 28, 28).to(DEV)
Y = torch.tensor(idx("train-labels-idx1-ubyte.gz")).long().to(DEV)
Xt = torch.tensor(idx("t10k-images-idx3-ubyte.gz")).float().div(255).view(-1, 1, 28, 28).to(DEV)
Yt = torch.tensor(idx("t10k-labels-idx1-ubyte.gz")).long().to(DEV)
nn = torch.nn


def accuracy(m):
    with torch.no_grad():
        return (m(Xt).argmax(1) == Yt).float().mean().item()


for seed in range(N):
    torch.manual_seed(seed)
    if MODEL == "mlp":
        m = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    else:
        m = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
    m = m.to(DEV)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    starts = list(range(0, 60000, 128))
    before = None
    accs = []
    for epoch in range(EPOCHS):
        order = torch.randperm(60000).to(DEV)
        for k, i in enumerate(starts):
            if EPOCHS == 1 and k == len(starts) - 3:
                before = accuracy(m)
            b = order[i:i + 128]
            loss = torch.nn.functional.cross_entropy(m(X[b]), Y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        accs.append(accuracy(m))
    if EPOCHS == 1:
        print(f"seed {seed}: accuracy after the epoch {accs[0]:.4f} (3 steps before its end {before:.4f})",
              flush=True)
    else:
        print(f"seed {seed}: accuracy after epochs 1..{EPOCHS}: " + " ".join(f"{a:.4f}" for a in accs), flush=True)
