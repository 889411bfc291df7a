# Lets real PEFT v0.18.0 + accelerate v1.11.0 (their source, see README.md) import on torch 1.13 with pyenv's stand-ins.
import safetensors.torch as _st
for _n in ["load_model", "save_model"]:
    if not hasattr(_st, _n): setattr(_st, _n, lambda *a, **k: None)
import safetensors as _s
if not hasattr(_s, "SafetensorError"): _s.SafetensorError = type("SafetensorError", (Exception,), {})
import sys as _sys, types as _types, importlib.abc as _abc, importlib.machinery as _mach
class _StubModule(_types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"): raise AttributeError(name)
        if name[:1].isupper():
            cls = type(name, (), {}); setattr(self, name, cls); return cls
        f = lambda *a, **k: None; setattr(self, name, f); return f
class _Finder(_abc.MetaPathFinder, _abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.startswith("transformers.") and fullname not in _sys.modules:
            return _mach.ModuleSpec(fullname, self, is_package=True)
        return None
    def create_module(self, spec):
        m = _StubModule(spec.name); m.__path__ = []; return m
    def exec_module(self, module): pass
import transformers as _tf
_tf.__path__ = []
_sys.meta_path.append(_Finder())
for _n in ["storage_ptr", "storage_size"]:
    if not hasattr(_st, _n): setattr(_st, _n, lambda t: 0)
