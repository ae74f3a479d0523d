"""PyTorch side of `lethe bench`: the same work as engine/src/bench, in plain PyTorch.

Usage (lethe bench calls it; by hand for debugging):
    .venv/bin/python bench/pytorch_reference.py '<row spec JSON>'
prints one JSON object: {"images_per_sec", "seconds", "peak_rss_mib",
"page_faults_per_step"} (the last: minor page faults of the process in the timed steps,
per step; plain PyTorch runs on glibc malloc's default settings, as a user's script would).

The spec fixes the model, batch size, step count, warm-up, threads and seed. Data
are synthetic uint8 images kept in memory, augmented per batch with the same
batched tensor operations Lethe uses (random resized crop + flip through an affine
grid, colour jitter, grayscale), so the comparison measures the frameworks, not two
different data pipelines. Optimiser: SGD, lr 0.01, momentum 0.9, weight decay 5e-4,
one `loss.item()` per step (Lethe's loop reads the loss every step too).

A second mode (spec with "kind": "unlearn") runs one whole unlearning run on the
demo (see `run_unlearn` below); a third ("kind": "shadows") trains LiRA's shadow
models of the leaky demo MLP (see `run_shadows`).
"""

import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------- models


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x if self.downsample is None else self.downsample(x)
        return F.relu(out + short)


class ResNet18(nn.Module):
    """CIFAR ResNet-18: 3x3 stride-1 stem, no max-pool (as Lethe's)."""

    def __init__(self, in_ch=3, widths=(64, 128, 256, 512)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks, c_in = [], widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks += [BasicBlock(c_in, w, stride), BasicBlock(w, w, 1)]
            c_in = w
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = widths[3]

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.blocks(out)
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


class SmallCnn(nn.Module):
    def __init__(self, in_ch=1, side=28, channels=(32, 64), feature_dim=128):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, channels[0], 3, padding=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.fc1 = nn.Linear(channels[1] * (side // 4) ** 2, feature_dim)
        self.feature_dim = feature_dim

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))


def build(spec):
    backbone = ResNet18() if spec["net"] == "resnet18" else SmallCnn()
    f = backbone.feature_dim
    task = spec["task"]
    if task == "supervised":
        head = nn.Linear(f, 10)
    elif task == "simclr":
        head = nn.Sequential(nn.Linear(f, f), nn.ReLU(), nn.Linear(f, 128))
    elif task == "moco":
        head = nn.Linear(f, 128)
    else:
        head = nn.Identity()
    return nn.Sequential(backbone, head)


def synthetic(spec, n):
    shape = (n, 3, 32, 32) if spec["net"] == "resnet18" else (n, 1, 28, 28)
    x = torch.randint(0, 256, shape, dtype=torch.int64).to(torch.uint8)
    y = torch.randint(0, 10, (n,), dtype=torch.int64)
    return x, y


# ---------------------------------------------------------- augmentation


def crop_flip(x, scale, ratio, flip_p):
    b = x.shape[0]

    def uniform(lo, hi):
        return torch.rand(b) * (hi - lo) + lo

    area = uniform(*scale)
    r = uniform(math.log(ratio[0]), math.log(ratio[1])).exp()
    w = (area * r).sqrt().clamp(max=1.0)
    h = (area / r).sqrt().clamp(max=1.0)
    cx = (torch.rand(b) * 2 - 1) * (1 - w)
    cy = (torch.rand(b) * 2 - 1) * (1 - h)
    flip = (torch.rand(b) < flip_p).float() * -2 + 1
    zero = torch.zeros(b)
    theta = torch.stack(
        [torch.stack([w * flip, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def gray(x):
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def factor(b, s):
    return (torch.rand(b, 1, 1, 1) * 2 - 1) * s + 1


def hue_rotate(x, h):
    b = x.shape[0]
    to_yiq = torch.tensor(
        [0.299, 0.587, 0.114, 0.596, -0.274, -0.322, 0.211, -0.523, 0.312]
    ).view(3, 3)
    to_rgb = torch.linalg.inv(to_yiq)
    angle = (torch.rand(b) * 2 - 1) * (h * 2 * math.pi)
    c, s = angle.cos(), angle.sin()
    one, zero = torch.ones(b), torch.zeros(b)
    rot = torch.stack([one, zero, zero, zero, c, -s, zero, s, c], 1).view(b, 3, 3)
    m = to_rgb @ rot @ to_yiq
    return torch.bmm(m, x.view(b, 3, -1)).view_as(x)


def contrastive(x):
    x = crop_flip(x, (0.1, 1.0), (3 / 4, 4 / 3), 0.5)
    if x.shape[1] != 3:
        return x
    b = x.shape[0]
    y = (x * factor(b, 0.4)).clamp(0, 1)
    mean = gray(y).mean((1, 2, 3), keepdim=True)
    y = ((y - mean) * factor(b, 0.4) + mean).clamp(0, 1)
    g = gray(y)
    y = ((y - g) * factor(b, 0.4) + g).clamp(0, 1)
    y = hue_rotate(y, 0.1).clamp(0, 1)
    pick = torch.rand(b, 1, 1, 1) < 0.8
    x = torch.where(pick, y, x)
    pick = torch.rand(b, 1, 1, 1) < 0.2
    return torch.where(pick, gray(x).expand_as(x), x)


def light(x):
    return crop_flip(x, (0.6, 1.0), (3 / 4, 4 / 3), 0.5)


# --------------------------------------------------------------- losses


def normalize(z):
    return z / z.norm(dim=1, keepdim=True).clamp(min=1e-12)


def nt_xent(z1, z2, t):
    n = z1.shape[0]
    z = normalize(torch.cat([z1, z2]))
    sim = (z @ z.t()) / t
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    idx = torch.arange(n)
    return F.cross_entropy(sim, torch.cat([idx + n, idx]))


def moco_loss(q, k, queue, t):
    q, k = normalize(q), normalize(k)
    pos = (q * k).sum(1, keepdim=True)
    neg = q @ normalize(queue).t()
    logits = torch.cat([pos, neg], 1) / t
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.int64))


# ----------------------------------------------------------------- rows


class Row:
    def __init__(self, spec):
        self.spec = spec
        self.model = build(spec)
        self.task = spec["task"]
        if self.task == "probe":
            self.model.eval()
            self.linear = nn.Linear(self.model[0].feature_dim, 10)
            params = self.linear.parameters()
        else:
            self.model.train()
            params = self.model.parameters()
        self.opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
        if self.task == "moco":
            self.key = build(spec)
            self.key.load_state_dict(self.model.state_dict())
            for p in self.key.parameters():
                p.requires_grad_(False)
            self.key.train()
            self.queue = normalize(torch.randn(4096, 128))
            self.ptr = 0
            self.pending = None

    def loss(self, x, y):
        t = self.task
        if t == "supervised":
            return F.cross_entropy(self.model(light(x)), y)
        if t == "simclr":
            return nt_xent(self.model(contrastive(x)), self.model(contrastive(x)), 0.5)
        if t == "moco":
            if self.pending is not None:
                with torch.no_grad():
                    for pk, pq in zip(self.key.parameters(), self.model.parameters()):
                        pk.mul_(0.99).add_(pq.detach(), alpha=0.01)
                    k = normalize(self.pending)
                    n = k.shape[0]
                    idx = (torch.arange(n) + self.ptr) % self.queue.shape[0]
                    self.queue[idx] = k
                    self.ptr = (self.ptr + n) % self.queue.shape[0]
            q = self.model(contrastive(x))
            with torch.no_grad():
                k = self.key(contrastive(x))
            self.pending = k
            return moco_loss(q, k, self.queue, 0.1)
        with torch.no_grad():
            f = self.model(light(x))
        return F.cross_entropy(self.linear(f), y)

    def steps(self, count):
        """Runs `count` steps; returns their wall time and the page faults meanwhile."""
        spec = self.spec
        x_all, y_all = synthetic(spec, count * spec["batch"])
        faults = minor_faults()
        start = time.perf_counter()
        order = torch.randperm(x_all.shape[0])
        for i in range(count):
            idx = order[i * spec["batch"] : (i + 1) * spec["batch"]]
            x = x_all.index_select(0, idx).float() / 255.0
            y = y_all.index_select(0, idx)
            loss = self.loss(x, y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            loss.item()
        return time.perf_counter() - start, minor_faults() - faults


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def run_row(spec):
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    row = Row(spec)
    if spec["warmup"] > 0:
        row.steps(spec["warmup"])
    seconds, faults = row.steps(spec["steps"])
    return {
        "images_per_sec": spec["steps"] * spec["batch"] / max(seconds, 1e-9),
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
        "page_faults_per_step": faults / max(spec["steps"], 1),
    }


# ------------------------------------------------------ unlearning runs
#
# One whole `lethe unlearn` run on the demo, as a user of the papers' PyTorch code
# would do it: load the checkpoint and the data, measure the forget split, unlearn,
# measure it again, save the model. The work per step mirrors Lethe's plugins
# (plugins/baseline-finetune, plugins/method-alignment-calibration): same batch
# sizes, optimiser, augmentation recipe, evaluation passes and audit. The time
# counted is the whole process, interpreter start and `import torch` included,
# since `lethe unlearn` is timed from process start to exit as well.


class DemoNet(nn.Module):
    """The demo's small CNN with the checkpoint's tensor names."""

    def __init__(self, head):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        if head == "classifier":
            self.fc = nn.Linear(128, 10)
        else:
            self.head = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 128))
        self.kind = head

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc(x) if self.kind == "classifier" else self.head(x)


def load_demo(spec):
    import numpy as np
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(spec["checkpoint"], "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    head = "classifier" if "fc.weight" in state else "projection"
    model = DemoNet(head)
    model.load_state_dict(state)
    data = np.load(spec["data"])
    x = torch.from_numpy(data["x"])
    y = torch.from_numpy(data["y"])
    forget = []
    with open(spec["forget"]) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                forget.append(int(line))
    forget = torch.tensor(sorted(set(forget)), dtype=torch.int64)
    train = torch.from_numpy(data["train_idx"])
    retain = train[~torch.isin(train, forget)]
    test = torch.from_numpy(data["test_idx"])
    return model, x, y, retain, forget, test, save_file


def batches(x, y, idx, bs, shuffle):
    order = idx[torch.randperm(idx.numel())] if shuffle else idx
    for i in range(0, order.numel(), bs):
        b = order[i : i + bs]
        yield x.index_select(0, b).float() / 255.0, y.index_select(0, b)


def digits(x):
    return crop_flip(x, (0.7, 1.0), (0.9, 1.1), 0.0)


def forget_loss(model, x, y, forget, bs, encoder):
    model.eval()
    total, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for xb, yb in batches(x, y, forget, bs, False):
            if encoder:
                loss = nt_xent(model(contrastive(xb)), model(contrastive(xb)), 0.5)
                total += loss.item() * xb.shape[0]
            else:
                logits = model(xb)
                correct += (logits.argmax(-1) == yb).sum().item()
                total += F.cross_entropy(logits, yb, reduction="sum").item()
            n += xb.shape[0]
    return total / max(n, 1), correct / max(n, 1)


def finetune(spec, model, x, y, retain, forget):
    bs = 256
    before = forget_loss(model, x, y, forget, bs, False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    for _ in range(spec["epochs"]):
        model.train()
        for xb, yb in batches(x, y, retain, bs, True):
            loss = F.cross_entropy(model(digits(xb)), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
    return before, forget_loss(model, x, y, forget, bs, False)


def alignment(model, x, y, idx):
    model.eval()
    torch.manual_seed(0x5EED)
    total = 0.0
    with torch.no_grad():
        for xb, _ in batches(x, y, idx, 256, False):
            z1 = normalize(model(contrastive(xb)))
            z2 = normalize(model(contrastive(xb)))
            total += (z1 * z2).sum(1).sum().item()
    return total / max(idx.numel(), 1)


def alignment_calibration(spec, model, x, y, retain, forget, test):
    bs, t = 512, 0.5
    alpha, beta, gamma = 1.0, 1.0, 1.0
    eps = forget.numel() / retain.numel()
    bf = min(max(round(bs * forget.numel() / (retain.numel() + forget.numel())), 1), bs - 1)
    br = bs - bf
    before = forget_loss(model, x, y, forget, bs, True)
    audit = [alignment(model, x, y, forget), alignment(model, x, y, test[: forget.numel()])]
    opt = torch.optim.SGD(model.parameters(), lr=0.006, momentum=0.9, weight_decay=5e-4)
    cycle = []
    for _ in range(spec["epochs"]):
        for xr, _ in batches(x, y, retain, br, True):
            model.train()
            if len(cycle) < bf:
                cycle += forget[torch.randperm(forget.numel())].tolist()
            fb, cycle = torch.tensor(cycle[:bf]), cycle[bf:]
            xf = x.index_select(0, fb).float() / 255.0
            xb = torch.cat([xr, xf])
            n, nf = xb.shape[0], xf.shape[0]
            is_f = torch.cat([torch.zeros(n - nf, dtype=torch.bool), torch.ones(nf, dtype=torch.bool)])
            z = normalize(torch.cat([model(contrastive(xb)), model(contrastive(xb))]))
            s = z @ z.t() / t
            idx = torch.arange(n)
            partner = torch.cat([idx + n, idx])
            pos = s.gather(1, partner.unsqueeze(1)).squeeze(1)
            lse = s.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf")).logsumexp(1)
            rows = torch.cat([is_f, is_f])
            sample = torch.cat([idx, idx])
            neg_pairs = rows.unsqueeze(1) & rows.unsqueeze(0) & (sample.unsqueeze(1) != sample.unsqueeze(0))
            retain_loss = (lse - pos)[~rows].mean()
            unlearn = -alpha * s[neg_pairs].mean() + beta * pos[rows].mean() + gamma * lse[rows].mean()
            loss = retain_loss + eps * unlearn
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
    audit += [alignment(model, x, y, forget), alignment(model, x, y, test[: forget.numel()])]
    return before, forget_loss(model, x, y, forget, bs, True)


def process_seconds():
    """Seconds since this process started (kernel start time)."""
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def run_unlearn(spec):
    import tempfile

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    model, x, y, retain, forget, test, save_file = load_demo(spec)
    if spec["method"] == "finetune":
        before, after = finetune(spec, model, x, y, retain, forget)
    else:
        before, after = alignment_calibration(spec, model, x, y, retain, forget, test)
    with tempfile.TemporaryDirectory() as d:
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, os.path.join(d, "unlearned.safetensors"))
    seconds = process_seconds()
    images = spec["epochs"] * retain.numel()
    return {
        "images_per_sec": images / max(seconds, 1e-9),
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
        "forget_loss_before": before[0],
        "forget_loss_after": after[0],
    }


# ------------------------------------------------------ shadow models
#
# LiRA's shadow models as the papers' code trains them (Privacy Meter, Deep
# Unlearn): a loop over the models, each a full training run of its own on its
# random half of the demo's 2,000 training digits, then its logits on every
# sample. "func" trains all of them at once as one torch.func ensemble instead
# (stack_module_state + vmap over functional_call, one Adam over the stacked
# parameters: Adam is elementwise, so each model gets its own update).


def shadow_mlp(d_in, hidden, classes):
    layers, d = [nn.Flatten()], d_in
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, classes))
    return nn.Sequential(*layers)


def run_shadows(spec):
    import numpy as np

    torch.set_num_threads(spec["threads"])
    data = np.load(spec["data"])
    x = torch.from_numpy(data["x"])
    y = torch.from_numpy(data["y"]).to(torch.int64)
    train = torch.from_numpy(data["train_idx"]).to(torch.int64)
    torch.manual_seed(spec["seed"])
    n, k_models, bs = train.numel(), spec["models"], spec["batch"]
    halves = [train[torch.randperm(n)[: n // 2]] for _ in range(k_models)]
    d_in = int(np.prod(x.shape[1:]))
    classes = int(y.max().item()) + 1
    start = time.perf_counter()
    checksum = 0.0
    if spec["pytorch"] == "loop":
        for k, half in enumerate(halves):
            torch.manual_seed(spec["seed"] + k)
            model = shadow_mlp(d_in, spec["hidden"], classes)
            opt = torch.optim.Adam(model.parameters(), lr=spec["lr"])
            model.train()
            for _ in range(spec["epochs"]):
                for xb, yb in batches(x, y, half, bs, True):
                    loss = F.cross_entropy(model(xb), yb)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    loss.item()
            model.eval()
            with torch.no_grad():
                for xb, _ in batches(x, y, torch.arange(x.shape[0]), 512, False):
                    checksum += model(xb).sum().item()
    else:
        from torch.func import functional_call, stack_module_state

        models = []
        for k in range(k_models):
            torch.manual_seed(spec["seed"] + k)
            models.append(shadow_mlp(d_in, spec["hidden"], classes))
        params, buffers = stack_module_state(models)
        base = shadow_mlp(d_in, spec["hidden"], classes).to("meta")

        def one(p, b, xb):
            return functional_call(base, (p, b), (xb,))

        ensemble = torch.vmap(one)
        opt = torch.optim.Adam(list(params.values()), lr=spec["lr"])
        h = n // 2
        for _ in range(spec["epochs"]):
            orders = torch.stack([half[torch.randperm(h)] for half in halves])
            for i in range(0, h, bs):
                idx = orders[:, i : i + bs]
                xb = x.index_select(0, idx.reshape(-1)).float().div(255.0)
                xb = xb.view(k_models, idx.shape[1], -1)
                yb = y.index_select(0, idx.reshape(-1))
                logits = ensemble(params, buffers, xb)
                # The sum of the models' mean losses: each model's gradient is its own.
                loss = (
                    F.cross_entropy(logits.reshape(-1, classes), yb, reduction="none")
                    .view(k_models, -1)
                    .mean(1)
                    .sum()
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss.item()
        with torch.no_grad():
            for xb, _ in batches(x, y, torch.arange(x.shape[0]), 512, False):
                xk = xb.flatten(1).unsqueeze(0).expand(k_models, -1, -1)
                checksum += ensemble(params, buffers, xk).sum().item()
    seconds = time.perf_counter() - start
    if not math.isfinite(checksum):
        raise SystemExit("the shadow models' logits are not finite")
    return {
        "images_per_sec": k_models * spec["epochs"] * (n // 2) / max(seconds, 1e-9),
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def main():
    spec = json.loads(sys.argv[1])
    if spec.get("kind") == "unlearn":
        print(json.dumps(run_unlearn(spec)))
    elif spec.get("kind") == "shadows":
        print(json.dumps(run_shadows(spec)))
    else:
        print(json.dumps(run_row(spec)))


if __name__ == "__main__":
    main()
