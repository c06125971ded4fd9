"""Read a pickled torch checkpoint without running any code from it.

Published checkpoints may hold pickled objects of classes that pose-edge does not have: KAPAO's training script saves
its whole `models.yolo.Model` (with `models.common.Conv`, `C3`, ... inside). Plain pickle would import those modules
and run their code, which is how a checkpoint file can run anything; `torch.load(weights_only=True)` refuses them.
This module reads them as data. It is passed to `torch.load` as its `pickle_module`, so torch still rebuilds the
tensors from the file's storages (zip format and the legacy format of PyTorch < 1.6), and every global the pickle
names goes through `Unpickler.find_class`, by these rules:

1. Data constructors (SAFE_GLOBALS, torch dtypes) are the real objects: torch's tensor and parameter rebuild
   functions, storages, `torch.Size`, `torch.device`, OrderedDict and the built-in containers and scalars. They build
   data and nothing else.
2. Any other name from the Python standard library (`os.system`, `builtins.eval`, `subprocess.Popen`, `functools.
   partial`, ...) is refused: a model's classes never live there, and code-running pickles need them.
3. Everything else (the originals' classes, torch.nn modules, numpy scalars) becomes a placeholder class named after
   the original; nothing is imported. Pickle makes objects of a class without calling it (NEWOBJ), then hands them
   their state (BUILD): a placeholder instance records both (`Placeholder.args`, `.state`) and runs nothing.
   Calling a placeholder class (pickle's REDUCE, the other way pickles run code) is refused, except for the few data
   constructors in RECORDED_CALLS (numpy scalars and arrays, paths, argparse.Namespace), whose call is recorded, not
   made.

A refused file raises UnsafePickleError naming the global; nothing from the file has run at that point.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import sys
from collections import OrderedDict
from pathlib import Path

import torch
import torch._utils

from pose_edge.errors import ArtifactError


class UnsafePickleError(ArtifactError):
    """The pickle needs a global that a checkpoint never needs (one that could run code)."""


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """Protocol-2 pickles store bytes as `_codecs.encode(text, 'latin1')`; only that use is allowed."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"it calls _codecs.encode with the {encoding!r} codec, which a checkpoint never needs")
    return text.encode("latin1")


def _reconstructor(cls, base, state):
    """copyreg._reconstructor (how protocol 0/1 pickles make objects): only for placeholder classes, and recorded."""
    if not isinstance(cls, _PlaceholderType):
        raise UnsafePickleError(f"it reconstructs a {getattr(cls, '__name__', cls)!r} through copyreg, which a "
                                "checkpoint never needs")
    return cls.__new__(cls, base, state)


SAFE_GLOBALS = {
    "collections.OrderedDict": OrderedDict,
    **{f"builtins.{t.__name__}": t for t in (set, frozenset, dict, list, tuple, int, float, complex, bool, str, bytes,
                                             bytearray, slice)},
    "_codecs.encode": _latin1_bytes,
    "copyreg._reconstructor": _reconstructor,
    "torch._utils._rebuild_tensor": torch._utils._rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": torch._utils._rebuild_parameter_with_state,
    "torch.Size": torch.Size,
    "torch.device": torch.device,
    "torch.UntypedStorage": torch.UntypedStorage,
}
# Names whose call a checkpoint may contain for plain data (a fitness value as a numpy scalar, a save path): the call
# is recorded on a placeholder instead of being made.
RECORDED_CALLS = frozenset({
    "numpy.dtype", "numpy.ndarray",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePosixPath", "pathlib.PureWindowsPath",
    "argparse.Namespace",
})


class _PlaceholderType(type):
    """The type of placeholder classes. Calling one is refused unless its name is in RECORDED_CALLS."""

    path: str

    def __call__(cls, *args, **kwargs):
        if cls.path not in RECORDED_CALLS:
            raise UnsafePickleError(f"it calls {cls.path}, which a checkpoint never needs")
        return cls.__new__(cls, *args, **kwargs)

    def __repr__(cls) -> str:
        return f"<placeholder class {cls.path}>"


class Placeholder(metaclass=_PlaceholderType):
    """An inert stand-in for an object of a class that was not imported.

    path: the original class, "module.QualName". args/kwargs: what the pickle passed when making it. state: what it
    passed as the object's state (for torch modules: their __dict__, with _parameters, _buffers and _modules).
    items / list_items: entries the pickle added as to a dict or list subclass.
    """

    path = ""

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.list_items = args, kwargs, None, {}, []
        return obj

    def __setstate__(self, state) -> None:
        self.state = state

    def __setitem__(self, key, value) -> None:
        self.items[key] = value

    def append(self, value) -> None:
        self.list_items.append(value)

    def extend(self, values) -> None:
        self.list_items.extend(values)

    def get(self, name: str, default=None):
        """An attribute of the original object, from its recorded state (`__dict__` or `(__dict__, slots)`)."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        return state.get(name, default) if isinstance(state, dict) else default

    def __repr__(self) -> str:
        return f"<placeholder {self.path}>"


_placeholder_classes: dict[str, _PlaceholderType] = {}


def placeholder_class(path: str) -> _PlaceholderType:
    """The placeholder class standing for the global `path` (one per path)."""
    if path not in _placeholder_classes:
        module, _, name = path.rpartition(".")
        _placeholder_classes[path] = _PlaceholderType(name, (Placeholder,), {"path": path, "__module__": module})
    return _placeholder_classes[path]


def resolve_global(module: str, name: str):
    """What a pickle's global `module.name` becomes (rules 1-3 of the module docstring)."""
    # Protocol 0-2 pickles name Python 2's modules (subprocess.call is written as commands.call): read them as
    # Python 3's, as pickle itself does, so that rule 2 sees the real module.
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    path = f"{module}.{name}"
    if path in SAFE_GLOBALS:
        return SAFE_GLOBALS[path]
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    if module.split(".")[0] in sys.stdlib_module_names and path not in RECORDED_CALLS:
        raise UnsafePickleError(f"it needs {path}, which a checkpoint never needs")
    return placeholder_class(path)


class Unpickler(pickle.Unpickler):
    """pickle.Unpickler whose globals follow resolve_global. torch.load subclasses it and adds persistent_load."""

    def find_class(self, module: str, name: str):
        return resolve_global(module, name)


def load(file, **kwargs):
    """pickle.load with Unpickler (torch.load calls this for the small records of the legacy format)."""
    return Unpickler(file, **kwargs).load()


def load_untrusted(path: str | Path):
    """The object saved in the torch checkpoint `path`, tensors on the CPU, without running code from the file.

    Raises UnsafePickleError (the file needs a global that could run code; named in the message) or ArtifactError
    (missing, truncated or not a torch checkpoint), each one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", pickle_module=sys.modules[__name__], weights_only=False)
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: refused, {e}; nothing from the file was run") from None
    except Exception as e:  # torch and pickle raise many types for damaged files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ArtifactError(f"{path}: cannot read it as a torch checkpoint ({first})") from None


def module_state_dict(module: Placeholder, prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
    """The state dict that a placeholder of a torch nn.Module would give: its parameters and persistent buffers and
    those of its submodules, named as nn.Module.state_dict names them ("layer.0.conv.weight")."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    skip = module.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, tensor in (module.get(group) or {}).items():
            if isinstance(tensor, torch.Tensor) and not (group == "_buffers" and name in skip):
                out[prefix + name] = tensor
    for name, child in (module.get("_modules") or {}).items():
        if isinstance(child, Placeholder):
            out.update(module_state_dict(child, f"{prefix}{name}."))
    return out
