# Prints `diffusers bench`'s summary next to a diffusers baseline's BASELINE json, key by key (our own script).
# Usage: python3 compare.py bench-dotnet.json bench-diffusers.json
import json, sys


def load(path):
    try:
        with open(path) as f: return json.load(f)
    except (OSError, ValueError) as e:
        print(f"{path}: {e}"); return {}


ours, theirs = load(sys.argv[1]).get("summary", {}), load(sys.argv[2])
print(f"{'summary key':32} {'DiffusersSharp':>15} {'diffusers':>15}")
for k in list(ours) + [k for k in theirs if k not in ours]:
    print(f"{k:32} {str(ours.get(k, '-')):>15} {str(theirs.get(k, '-')):>15}")
