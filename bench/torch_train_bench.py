"""PyTorch's milliseconds per training step of mlp-small (784-512-512-10 ReLU) or cnn-fmnist
(WORKLOADS.md), batch 128, cross-entropy, Adam lr 1e-3, fp32 (TF32 off for matmuls and
convolutions: Anvil's fp32 is true fp32), 8
pre-made batches already on the GPU rotated, no host sync inside the timed loop, CUDA
events, warm-up, median of 5 repetitions of N steps.  Modes: eager (fused Adam),
compile, reduce-overhead, and a manual whole-step CUDA graph (capturable Adam).
Prints one JSON line per mode.   usage: torch_train_bench.py mlp|cnn [STEPS (200)] [WARMUP (50)]
"""
import json
import sys

import torch

MODEL = sys.argv[1] if len(sys.argv) > 1 else "mlp"
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
WARMUP = int(sys.argv[3]) if len(sys.argv) > 3 else 50
dev = "cuda"
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def model():
    torch.manual_seed(0)
    nn = torch.nn
    if MODEL == "cnn":
        return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10)).to(dev)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(),
                         nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)).to(dev)


g = torch.Generator(device=dev).manual_seed(1)
xs = [torch.rand(128, 1, 28, 28, device=dev, generator=g) for _ in range(8)]
ys = [torch.randint(0, 10, (128,), device=dev, generator=g) for _ in range(8)]


def timed(step):
    for i in range(WARMUP):
        step(i)
    torch.cuda.synchronize()
    ms = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for i in range(STEPS):
            step(i)
        b.record()
        torch.cuda.synchronize()
        ms.append(a.elapsed_time(b) / STEPS)
    ms.sort()
    return ms


def report(mode, ms):
    print(json.dumps({"impl": "pytorch", "model": MODEL, "mode": mode, "ms_per_step": round(ms[2], 4), "min": round(ms[0], 4),
                      "max": round(ms[-1], 4), "steps": STEPS, "torch": torch.__version__}), flush=True)


def plain(compile_mode=None):
    m = model()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, fused=True)

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
    m = model()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, capturable=True, foreach=True)
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


for mode, make in [("eager", lambda: plain()), ("compile", lambda: plain("default")),
                   ("reduce-overhead", lambda: plain("reduce-overhead")), ("whole-step-graph", whole_graph)]:
    try:
        report(mode, timed(make()))
    except Exception as e:  # a mode that fails is reported, as WORKLOADS.md does
        print(json.dumps({"impl": "pytorch", "model": MODEL, "mode": mode, "error": str(e)[:200]}), flush=True)
