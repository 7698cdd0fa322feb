"""Writes examples/models/resnet18.json: the CIFAR-style ResNet-18 of WORKLOADS.md (3x3 stem
of stride 1, no stem max-pool, BatchNorm, BasicBlocks [2, 2, 2, 2]) as a model file, with
torchvision's layer names.  The same network as anvil_model_builtin(..., "resnet18").
    python3 examples/models/make_resnet18.py [C H W CLASSES]   (default 1 28 28 10)"""
import json
import os
import sys

c, h, w, classes = (int(a) for a in sys.argv[1:5]) if len(sys.argv) >= 5 else (1, 28, 28, 10)


def conv(name, out, k, stride, inputs=None):
    d = {"type": "conv2d", "name": name, "out_channels": out, "kernel_size": k, "stride": stride,
         "padding": k // 2, "bias": False}
    if inputs:
        d["inputs"] = inputs
    return d


layers = [conv("conv1", 64, 3, 1), {"type": "batchnorm2d", "name": "bn1"}, {"type": "relu", "name": "relu"}]
prev, in_ch = "relu", 64
for s, width in enumerate([64, 128, 256, 512]):
    for b in range(2):
        p = f"layer{s + 1}.{b}"
        stride = 2 if s > 0 and b == 0 else 1
        layers += [conv(f"{p}.conv1", width, 3, stride, [prev]), {"type": "batchnorm2d", "name": f"{p}.bn1"},
                   {"type": "relu", "name": f"{p}.relu1"}, conv(f"{p}.conv2", width, 3, 1),
                   {"type": "batchnorm2d", "name": f"{p}.bn2"}]
        shortcut = prev
        if stride != 1 or in_ch != width:
            layers += [conv(f"{p}.downsample.0", width, 1, stride, [prev]),
                       {"type": "batchnorm2d", "name": f"{p}.downsample.1"}]
            shortcut = f"{p}.downsample.1"
        layers += [{"type": "add", "name": f"{p}.add", "inputs": [f"{p}.bn2", shortcut]},
                   {"type": "relu", "name": f"{p}.relu2"}]
        prev, in_ch = f"{p}.relu2", width
layers += [{"type": "adaptive_avgpool2d", "name": "avgpool", "output_size": 1}, {"type": "flatten", "name": "flatten"},
           {"type": "linear", "name": "fc", "out_features": classes}]
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resnet18.json")
with open(out, "w") as f:
    json.dump({"name": "resnet18", "input": [c, h, w], "layers": layers}, f, indent=1)
    f.write("\n")
print(out, len(layers), "layers")
