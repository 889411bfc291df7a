# Runs a baseline script with the device's used memory sampled through NVML every 2 ms (as `diffusers bench` does), from
# before the models to the script's first torch.cuda.empty_cache() (diffusers_baseline_sd35.py: right after the pipeline).
import json, runpy, sys, threading, time
import pynvml, torch
torch.zeros(1, device="cuda"); torch.cuda.synchronize()  # the CUDA context is in the baseline, as in bench
pynvml.nvmlInit(); h = pynvml.nvmlDeviceGetHandleByIndex(0)
used = lambda: pynvml.nvmlDeviceGetMemoryInfo(h).used
base = used(); peak = [base]; stop = [False]
def loop():
    while not stop[0]:
        peak[0] = max(peak[0], used()); time.sleep(0.002)
th = threading.Thread(target=loop, daemon=True); th.start()
orig = torch.cuda.empty_cache
def hooked():
    if not stop[0]:
        stop[0] = True; th.join()
        g = 2 ** 30
        print("NVML " + json.dumps({"baseline_gib": base / g, "peak_gib": peak[0] / g, "peak_above_baseline_gib": (peak[0] - base) / g,
              "max_memory_reserved_gib": torch.cuda.max_memory_reserved() / g, "max_memory_allocated_gib": torch.cuda.max_memory_allocated() / g}), flush=True)
    orig()
torch.cuda.empty_cache = hooked
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
