"""End-to-end parity on real data: a built-in model (mlp: nn.Sequential(Flatten,
Linear(784,512), ReLU, Linear(512,512), ReLU, Linear(512,10)); cnn: WORKLOADS.md's
cnn-fmnist) from fixed initial weights, trained one epoch on Fashion-MNIST in dataset order
(no shuffle), batch 128, Adam(lr=1e-3, foreach=False), cross-entropy; then test accuracy
and mean test loss.  fp32 throughout (no TF32).

Writes tests/golden/<model>_fmnist.safetensors: the initial weights under state_dict
names, "expect.accuracy", "expect.test_loss", "expect.train_loss" (mean over the epoch).
Needs python3 with torch, safetensors, numpy and Debian's dataset-fashion-mnist.
Regenerate: python3 tests/golden/make_fmnist.py mlp; python3 tests/golden/make_fmnist.py cnn
"""
import gzip
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

D = os.environ.get("ANVIL_DATA_DIR", "/usr/share/datasets/fashion-mnist")
MODEL = sys.argv[1] if len(sys.argv) > 1 else "mlp"


def idx(name):
    d = gzip.open(os.path.join(D, name)).read()
    nd = d[3]
    dims = [int.from_bytes(d[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(d[4 + 4 * nd:], dtype=np.uint8).reshape(dims)


torch.manual_seed(2026)
X = torch.tensor(idx("train-images-idx3-ubyte.gz")).float().div(255).view(-1, 1, 28, 28)
Y = torch.tensor(idx("train-labels-idx1-ubyte.gz")).long()
Xt = torch.tensor(idx("t10k-images-idx3-ubyte.gz")).float().div(255).view(-1, 1, 28, 28)
Yt = torch.tensor(idx("t10k-labels-idx1-ubyte.gz")).long()
nn = torch.nn
if MODEL == "cnn":
    m = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1),
                      nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
else:
    m = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                      nn.Linear(512, 10))
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
init = {k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}
opt = torch.optim.Adam(m.parameters(), lr=1e-3, foreach=False)
losses = []
for i in range(0, 60000, 128):
    loss = torch.nn.functional.cross_entropy(m(X[i:i + 128]), Y[i:i + 128])
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
with torch.no_grad():
    out = m(Xt)
    acc = (out.argmax(1) == Yt).float().mean().item()
    test_loss = torch.nn.functional.cross_entropy(out, Yt).item()
print(f"accuracy {acc:.4f} test loss {test_loss:.4f} train loss {np.mean(losses):.4f}")
init["expect.accuracy"] = torch.tensor([acc], dtype=torch.float32)
init["expect.test_loss"] = torch.tensor([test_loss], dtype=torch.float32)
init["expect.train_loss"] = torch.tensor([float(np.mean(losses))], dtype=torch.float32)
save_file(init, os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{MODEL}_fmnist.safetensors"),
          metadata={"source": "make_mlp_fmnist.py"})
