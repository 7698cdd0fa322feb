"""PyTorch's milliseconds per training step of a WORKLOADS.md workload, cross-entropy, fp32
(TF32 off for matmuls and convolutions: Anvil's fp32 is true fp32):
  mlp       mlp-small (784-512-512-10 ReLU), 1x28x28, batch 128, Adam lr 1e-3
  cnn       cnn-fmnist, 1x28x28, batch 128, Adam lr 1e-3
  resnet18  resnet18-cifar (CIFAR-style ResNet-18: 3x3 stem of stride 1, no stem max-pool,
            BatchNorm, 10 classes; torchvision's module layout and state_dict names, defined
            here so torchvision is not needed), 3x32x32, batch 256, SGD lr 0.05 momentum 0.9
8 pre-made batches already on the GPU rotated, no host sync inside the timed loop, CUDA
events, warm-up, median of 5 repetitions of N steps.  Modes: eager (fused Adam / fused
SGD), compile, reduce-overhead, and a manual whole-step CUDA graph (capturable Adam /
foreach SGD).  Prints one JSON line per mode; a mode that fails prints its error and the
next mode runs.  resnet18's batches are the bytes of anvil_train_bench.c's LCG, so both
train on the same data; mlp and cnn use torch.rand / torch.randint.

usage: torch_train_bench.py mlp|cnn|resnet18 [STEPS (200)] [WARMUP (50)]
         [--device cuda|cpu] [--modes eager,compile,reduce-overhead,whole-step-graph]
       torch_train_bench.py MODEL --check ANVIL_NAMES_JSON
         compares the model's parameter count and state_dict names, shapes and dtypes with
         the line `anvil_train_bench MODEL cpu names` prints; exit status 1 on a mismatch.
--device cpu is for testing the script on a machine without a GPU (host clock timing;
the whole-step graph needs CUDA).
"""
import argparse
import gc
import json
import time

import torch

MODES = ["eager", "compile", "reduce-overhead", "whole-step-graph"]
ap = argparse.ArgumentParser()
ap.add_argument("model", nargs="?", default="mlp", choices=["mlp", "cnn", "resnet18"])
ap.add_argument("steps", nargs="?", type=int, default=200)
ap.add_argument("warmup", nargs="?", type=int, default=50)
ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
ap.add_argument("--modes", default=",".join(MODES))
ap.add_argument("--check", metavar="ANVIL_NAMES_JSON")
args = ap.parse_args()
MODEL, STEPS, WARMUP, dev = args.model, args.steps, args.warmup, args.device
RESNET = MODEL == "resnet18"
BATCH = 256 if RESNET else 128
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
nn = torch.nn


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """torchvision's resnet18 with a 3x3 stride-1 stem and no max-pool (CIFAR style)."""

    def __init__(self, channels=3, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        cin, layers = 64, []
        for i, w in enumerate([64, 128, 256, 512]):
            layers.append(nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def model(dev=dev):
    torch.manual_seed(0)
    if RESNET:
        return ResNet18().to(dev)
    if MODEL == "cnn":
        return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10)).to(dev)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(),
                         nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)).to(dev)


def optimizer(params, graph=False):
    if RESNET:  # SGD has no step counter: capturing its foreach update needs nothing more
        return torch.optim.SGD(params, lr=0.05, momentum=0.9, **({"foreach": True} if graph else {"fused": True}))
    return torch.optim.Adam(params, lr=1e-3, **({"capturable": True, "foreach": True} if graph else {"fused": True}))


def check(path):
    a = json.loads(open(path).read())
    m = model("cpu")  # the check needs no GPU
    ours = {k: (str(v.dtype).replace("torch.", ""), list(v.shape)) for k, v in m.state_dict().items()}
    theirs = {k: (v["dtype"], v["shape"]) for k, v in a["state_dict"].items()}
    n = sum(p.numel() for p in m.parameters())
    bad = [f"parameters: pytorch {n}, anvil {a['params']}"] if n != a["params"] else []
    bad += [f"only in pytorch: {k} {ours[k]}" for k in ours if k not in theirs]
    bad += [f"only in anvil: {k} {theirs[k]}" for k in theirs if k not in ours]
    bad += [f"{k}: pytorch {ours[k]}, anvil {theirs[k]}" for k in ours if k in theirs and ours[k] != theirs[k]]
    if bad:
        print(f"model check {MODEL}: MISMATCH with Anvil's model:\n  " + "\n  ".join(bad))
        raise SystemExit(1)
    print(f"model check {MODEL}: {n} parameters ({n / 1e6:.2f} M), {len(ours)} state_dict tensors: "
          f"names, shapes and dtypes equal to Anvil's")


if args.check:
    check(args.check)
    raise SystemExit(0)


def lcg_bytes(count, shift, state=1):
    """count successive states of s = s * 1664525 + 1013904223 (mod 2^32) after `state`,
    each >> shift; int64 arithmetic without overflow (products stay below 2^49)."""
    a, c, mask, block = 1664525, 1013904223, 0xFFFFFFFF, 1 << 16
    first = []
    for _ in range(min(block, count)):
        state = (state * a + c) & mask
        first.append(state)
    cur = torch.tensor(first, dtype=torch.int64)
    ab, cb = 1, 0  # s -> ab * s + cb jumps `block` states
    for _ in range(block):
        ab, cb = (ab * a) & mask, (cb * a + c) & mask

    def mulmod(x, m):  # x * m mod 2^32 for x, m < 2^32
        return (x * (m & 0xFFFF) + (((x * (m >> 16)) & 0xFFFF) << 16)) & mask

    out = [cur]
    for _ in range((count - 1) // block):
        cur = (mulmod(cur, ab) + cb) & mask
        out.append(cur)
    s = torch.cat(out)[:count]
    return (s >> shift), int(s[-1])


def batches():
    if not RESNET:
        g = torch.Generator(device=dev).manual_seed(1)
        return ([torch.rand(128, 1, 28, 28, device=dev, generator=g) for _ in range(8)],
                [torch.randint(0, 10, (128,), device=dev, generator=g) for _ in range(8)])
    n, px = 8 * BATCH, 8 * BATCH * 3 * 32 * 32
    pixels, last = lcg_bytes(px, 24)
    labels, _ = lcg_bytes(n, 16, last)
    x = (pixels.to(torch.float32) / 255).view(8, BATCH, 3, 32, 32).to(dev)
    y = (labels % 10).view(8, BATCH).to(dev)
    return [x[i].contiguous() for i in range(8)], [y[i].contiguous() for i in range(8)]


xs, ys = batches()


def timed(step):
    cuda = dev == "cuda"
    for i in range(WARMUP):
        step(i)
    if cuda:
        torch.cuda.synchronize()
    ms = []
    for _ in range(5):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
        else:
            t0 = time.perf_counter()
        for i in range(STEPS):
            step(i)
        if cuda:
            b.record()
            torch.cuda.synchronize()
            ms.append(a.elapsed_time(b) / STEPS)
        else:
            ms.append((time.perf_counter() - t0) * 1e3 / STEPS)
    ms.sort()
    return ms


def report(mode, ms):
    print(json.dumps({"impl": "pytorch", "model": MODEL, "mode": mode, "ms_per_step": round(ms[2], 4), "min": round(ms[0], 4),
                      "max": round(ms[-1], 4), "steps": STEPS, "batch": BATCH, "torch": torch.__version__}), flush=True)


def plain(compile_mode=None):
    m = model()
    opt = optimizer(m.parameters())

    def fwd(x, y):
        return torch.nn.functional.cross_entropy(m(x), y)

    f = fwd if compile_mode is None else torch.compile(fwd, mode=compile_mode)

    def step(i):
        if compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # a new iteration for its graphs
        opt.zero_grad(set_to_none=True)
        f(xs[i % 8], ys[i % 8]).backward()
        opt.step()
    return step


def whole_graph():
    if dev != "cuda":
        raise RuntimeError("the whole-step CUDA graph needs --device cuda")
    m = model()
    opt = optimizer(m.parameters(), graph=True)
    sx, sy = xs[0].clone(), ys[0].clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(m(sx), sy).backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        loss = torch.nn.functional.cross_entropy(m(sx), sy)
        loss.backward()
        opt.step()

    def step(i):
        sx.copy_(xs[i % 8])
        sy.copy_(ys[i % 8])
        graph.replay()
    return step


makers = {"eager": lambda: plain(), "compile": lambda: plain("default"),
          "reduce-overhead": lambda: plain("reduce-overhead"), "whole-step-graph": whole_graph}
for mode in args.modes.split(","):
    try:
        report(mode, timed(makers[mode]()))
    except Exception as e:  # a mode that fails is reported, as WORKLOADS.md does, and the next one runs
        msg = " ".join(f"{type(e).__name__}: {e}".split())
        print(json.dumps({"impl": "pytorch", "model": MODEL, "mode": mode, "error": msg[:300]}), flush=True)
    # free this mode's model, optimizer, compiled code and graphs before the next mode
    gc.collect()
    try:
        torch._dynamo.reset()
        if dev == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    except Exception as e:
        print(json.dumps({"impl": "pytorch", "model": MODEL, "mode": mode + " (cleanup)",
                          "error": " ".join(f"{type(e).__name__}: {e}".split())[:300]}), flush=True)
