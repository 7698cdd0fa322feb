"""Whether one epoch's end accuracy comes from the order or from the initial weights: the
mlp (WORKLOADS.md's mlp-small: Adam 1e-3, batch 128, the last partial batch kept) trained
in PyTorch for one epoch in *Anvil's* shuffled order of a given seed (anvil_shuffle_order
from the CPU build's libanvil.so), from PyTorch's own initial weights of several seeds;
prints the test accuracy after each of the epoch's last 3 steps.  Backs the note in
docs/benchmarks.md on the default seed's first epoch; not a test.  CPU, fp32.
  ANVIL_DATA_DIR=.data python3 bench/order_effect.py [LIBANVIL (build-lead/libanvil.so)]
      [ORDER_SEEDS (0,1,2)] [INIT_SEEDS (0,1,2)]
"""
import ctypes
import gzip
import os
import sys

import numpy as np
import torch

LIB = sys.argv[1] if len(sys.argv) > 1 else "build-lead/libanvil.so"
ORDER_SEEDS = [int(s) for s in (sys.argv[2] if len(sys.argv) > 2 else "0,1,2").split(",")]
INIT_SEEDS = [int(s) for s in (sys.argv[3] if len(sys.argv) > 3 else "0,1,2").split(",")]
D = os.environ.get("ANVIL_DATA_DIR", "/usr/share/datasets/fashion-mnist")

lib = ctypes.CDLL(LIB)
lib.anvil_shuffle_order.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_bool, ctypes.c_uint64, ctypes.c_uint64]


def idx(name):
    d = gzip.open(os.path.join(D, name)).read()
    nd = d[3]
    dims = [int.from_bytes(d[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(d[4 + 4 * nd:], dtype=np.uint8).reshape(dims)


X = torch.tensor(idx("train-images-idx3-ubyte.gz")).float().div(255).view(-1, 784)
Y = torch.tensor(idx("train-labels-idx1-ubyte.gz")).long()
Xt = torch.tensor(idx("t10k-images-idx3-ubyte.gz")).float().div(255).view(-1, 784)
Yt = torch.tensor(idx("t10k-labels-idx1-ubyte.gz")).long()
N = X.shape[0]


def anvil_order(seed):
    o = np.zeros(N, dtype=np.uint32)
    lib.anvil_shuffle_order(o.ctypes.data, N, True, seed, 0)  # epoch 0
    return torch.tensor(o.astype(np.int64))


def last_accuracies(init_seed, order):
    torch.manual_seed(init_seed)
    nn = torch.nn
    m = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    starts = list(range(0, N, 128))
    accs = []
    for k, i in enumerate(starts):
        b = order[i:i + 128]
        loss = torch.nn.functional.cross_entropy(m(X[b]), Y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k >= len(starts) - 3:
            with torch.no_grad():
                accs.append((m(Xt).argmax(1) == Yt).float().mean().item())
    return accs


for os_ in ORDER_SEEDS:
    order = anvil_order(os_)
    for is_ in INIT_SEEDS:
        accs = last_accuracies(is_, order)
        print(f"Anvil's order of seed {os_}, torch's init of seed {is_}: " + " ".join(f"{a:.4f}" for a in accs),
              flush=True)
