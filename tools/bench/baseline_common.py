# Shared by the diffusers baselines of `diffusers bench` (our own code): arguments, random weights, timing, output.
# Each measure: `warmup` untimed runs, then `runs` timed ones, each bracketed by cuda.synchronize; the median is
# reported, as `diffusers bench` reports it. The last line is "BASELINE {json}" with `diffusers bench`'s summary keys.
import argparse, contextlib, json, os, statistics, sys, time

import torch

sys.path.insert(0, os.environ.get("DIFFUSERS_SRC", "/tmp/py"))


def parse_args(description, presets, add=None):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default=presets[0],
                   help=f"a preset ({', '.join(presets)}) or a diffusers pipeline folder whose configs to use (no weights read)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seed", type=int, default=123456)
    p.add_argument("--no-text-encoders", action="store_true",
                   help="skip the text-encoder measures (they need transformers; the CPU smoke test has only a stand-in)")
    if add: add(p)
    a = p.parse_args()
    a.dt = getattr(torch, a.dtype)
    return a


def on(device):
    """Creates tensors directly on `device` (torch >= 2.0); older torch (the CPU smoke test) creates them on the CPU."""
    return torch.device(device) if hasattr(torch.device, "__enter__") else contextlib.nullcontext()


def random_model(make, device, dtype, std=0.02):
    """make() built on meta, cast, then allocated on the device in `dtype` and drawn as randn * std (no float32 copy of
    a 12 B model). Models with buffers (CLIP's position_ids) are built on the device, to keep their values; on torch
    < 2.0 (the CPU smoke test) everything is built on the CPU and moved."""
    with on("meta"):
        m = make()
    if next(m.parameters()).device.type != "meta":
        m = m.to(device=device, dtype=dtype)
    elif any(True for _ in m.buffers()):
        with on(device):
            m = make()
        m = m.to(dtype)
    else:
        m = m.to(dtype).to_empty(device=device)
        if hasattr(m, "tie_weights"): m.tie_weights()  # transformers' T5: shared = embed_tokens again
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, std)
    return m.eval()


def params(m):
    return sum(p.numel() for p in m.parameters())


class Timer:
    def __init__(self, device, warmup, runs):
        self.cuda = torch.device(device).type == "cuda"
        self.warmup, self.runs = warmup, runs

    def sync(self):
        if self.cuda: torch.cuda.synchronize()

    def median_ms(self, f):
        for _ in range(self.warmup): f()
        times = []
        for _ in range(self.runs):
            self.sync(); t = time.perf_counter(); f(); self.sync()
            times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)

    def reset_peak(self):
        if self.cuda: torch.cuda.reset_peak_memory_stats()

    def peak_gib(self):
        return torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None


def versions():
    import diffusers
    try:
        import transformers; tv = transformers.__version__
    except Exception as e:  # the CPU smoke test's stand-in
        tv = f"unavailable ({type(e).__name__})"
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print("diffusers", diffusers.__version__, "transformers", tv, "torch", torch.__version__, name, flush=True)


def free():
    import gc
    gc.collect()
    if torch.cuda.is_available(): torch.cuda.empty_cache()


def report(res):
    print("BASELINE " + json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()}), flush=True)
