"""The safetensors file format in plain Python (the Rust-backed package is not installable offline).

Only what diffusers calls when it reads and writes model folders: load_file, load, save_file and safe_open.
"""
import json
import struct

import torch

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}
_NAMES = {v: k for k, v in _DTYPES.items()}


def _read_header(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data, 8 + n


def _tensor(info, data, base):
    start, end = info["data_offsets"]
    dtype = _DTYPES[info["dtype"]]
    flat = torch.frombuffer(bytearray(data[base + start: base + end]), dtype=dtype) if end > start else torch.empty(0, dtype=dtype)
    return flat.reshape(info["shape"]).clone()


def load_file(path, device="cpu"):
    header, data, base = _read_header(path)
    return {k: _tensor(v, data, base).to(device) for k, v in header.items() if k != "__metadata__"}


def load(data):
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    return {k: _tensor(v, data, 8 + n) for k, v in header.items() if k != "__metadata__"}


def save_file(tensors, path, metadata=None):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        raw = t.view(torch.int16 if t.dtype == torch.bfloat16 else t.dtype).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


class safe_open:
    def __init__(self, path, framework="pt", device="cpu"):
        self._header, self._data, self._base = _read_header(path)
        self._device = device

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def keys(self):
        return [k for k in self._header if k != "__metadata__"]

    def metadata(self):
        return self._header.get("__metadata__")

    def get_tensor(self, name):
        return _tensor(self._header[name], self._data, self._base).to(self._device)

    get_slice = get_tensor
