r"""The file format of :meth:`morphst.tl.Translator.save`: a JSON header and raw arrays, with a version and a checksum.

Not a pickle: loading never runs code from the file. Layout (all integers little-endian)::

    MAGIC                      b"MORPHST\x00TRANSLATOR\n"
    uint64                     length H of the header
    H bytes                    JSON (UTF-8): format, format_version, versions of morphst / scikit-learn / numpy,
                               the array table (key, dtype, shape, offset, nbytes) and the translator's state
    arrays                     the raw bytes of every array, C order, at their offsets
    32 bytes                   sha256 of everything before it

Every byte is covered by the trailing sha256, so a truncated or altered file is refused. The state is a tree of
JSON values in which arrays, tuples, numpy scalars and objects are tagged dicts; objects are rebuilt only from
classes of scikit-learn (fitted estimators and their helpers) and morphst's FeatureHead, from their attribute dicts
(as scikit-learn's own ``__setstate__`` does), never by calling code named in the file. morphst's
LastBlockFinetune (torch modules) is saved by its own hook as arrays (parameters, each block's and head's
``state_dict``) and rebuilt by its own classmethod: the architecture built by name without weights, then the saved
weights.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"MORPHST\x00TRANSLATOR\n"
FORMAT = "morphst.Translator"
#: The version this morphst writes; it reads :data:`READABLE_VERSIONS` (1: the recipe spread over attributes).
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_LEN = struct.Struct("<Q")
_SHA_LEN = 32
#: modules whose classes may be rebuilt on load (by attribute dict, no constructor call)
_ALLOWED_MODULES = ("sklearn.",)
#: morphst classes that may be rebuilt the same way (fitted state: arrays, numbers, strings)
_ALLOWED_CLASSES = ("morphst.tl._nn._head:FeatureHead",)
#: morphst classes holding torch modules: saved by their ``_saved_state()`` (arrays, numbers, strings) and rebuilt
#: by their classmethod ``_from_saved_state(state)``, never from an attribute dict
_HOOKED_CLASSES = ("morphst.tl._nn._finetune:LastBlockFinetune",)
#: classes stored under a former path, rebuilt from the current one
_MOVED_CLASSES = {"morphst.tl._translation._head:FeatureHead": "morphst.tl._nn._head:FeatureHead"}
_PICKLE_PREFIXES = (b"\x80", b"\x78\x9c", b"\x1f\x8b", b"ZF", b"BZh", b"\xfd7zXZ")  # pickle / joblib-compressed


class TranslatorFileError(ValueError):
    """A translator file that cannot be read: damaged, truncated, of another format or version."""


class _NotSavable(TypeError):
    """An object whose own saving hook refused it; its message says what to do."""


class _NotRebuilt(ValueError):
    """An intact file whose hooked object cannot be rebuilt here (e.g. its architecture is unknown to this timm)."""


# ----------------------------------------------------------------------------------------------------------------
# encoding
# ----------------------------------------------------------------------------------------------------------------
def _pure_python(cls: type) -> bool:
    """Whether every class in ``cls``'s MRO (except ``object``) is defined in Python, so ``__dict__`` is its state.

    Compiled (Cython) classes keep state outside ``__dict__`` (e.g. scikit-learn's KD-tree): not encodable.
    """
    heaptype = 1 << 9  # Py_TPFLAGS_HEAPTYPE: set for classes made by a class statement
    return all(b.__flags__ & heaptype for b in cls.__mro__ if b is not object)


class _Encoder:
    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []

    def array(self, a: np.ndarray) -> dict:
        if a.dtype.hasobject:
            flat = a.ravel().tolist()
            if all(isinstance(v, str) for v in flat):
                return {"__strarray__": flat, "shape": list(a.shape)}
            msg = f"an object array of {sorted({type(v).__name__ for v in flat})}"
            raise TypeError(msg)
        if a.dtype.kind not in "biufcUSmM" or a.dtype.fields is not None:
            msg = f"an array of dtype {a.dtype}"
            raise TypeError(msg)
        self.arrays.append(np.ascontiguousarray(a))
        return {"__ndarray__": len(self.arrays) - 1}

    def __call__(self, v: Any, where: str) -> Any:
        if v is None or isinstance(v, bool | str):
            return v
        if isinstance(v, int) and not isinstance(v, np.integer):
            return v
        if isinstance(v, float):
            return v if np.isfinite(v) else {"__float__": repr(v)}
        if isinstance(v, np.ndarray):
            try:
                return self.array(v)
            except TypeError as e:
                raise TypeError(f"{where}: {e}") from None
        if isinstance(v, np.generic):
            return {"__scalar__": v.dtype.str, "value": self(v.item(), where)}
        if isinstance(v, list):
            return [self(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, tuple):
            return {"__tuple__": [self(x, f"{where}[{i}]") for i, x in enumerate(v)]}
        if isinstance(v, dict):
            if all(isinstance(k, str) for k in v):
                return {"__dict__": {k: self(x, f"{where}.{k}") for k, x in v.items()}}
            return {"__items__": [[self(k, where), self(x, f"{where}[{k!r}]")] for k, x in v.items()]}
        if isinstance(v, np.dtype):
            return {"__dtype__": v.str}
        if isinstance(v, np.random.RandomState):
            return {"__randomstate__": self(v.get_state(), f"{where}.state")}
        if isinstance(v, type) and v.__module__ in ("numpy", "builtins"):
            return {"__type__": f"{v.__module__}:{v.__qualname__}"}
        cls = type(v)
        name = f"{cls.__module__}:{cls.__qualname__}"
        if name in _HOOKED_CLASSES:
            try:
                state = v._saved_state()
            except TypeError as e:
                raise _NotSavable(str(e)) from None
            return {"__saved_state__": name, "state": self(state, f"{where}.state")}
        allowed = (
            cls.__module__.startswith(_ALLOWED_MODULES) or f"{cls.__module__}:{cls.__qualname__}" in _ALLOWED_CLASSES
        )
        if allowed and _pure_python(cls) and hasattr(v, "__dict__"):
            return {"__object__": f"{cls.__module__}:{cls.__qualname__}", "state": self(dict(vars(v)), where)}
        msg = f"{where}: a {cls.__module__}.{cls.__qualname__}"
        raise TypeError(msg)


def canonical_arrays(obj: Any, _seen: set | None = None) -> None:
    """Replace, in place, every array attribute of ``obj``'s scikit-learn / morphst objects by a C-contiguous copy.

    The file stores arrays in C order; an estimator whose arrays are views or Fortran-ordered (e.g. a PCA's
    ``components_``) would take another BLAS path after loading and predict up to ~1e-6 differently. Made
    canonical before saving (and right after fitting), the translator predicts the same before and after a save.
    """
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, list | tuple):
        for x in obj:
            canonical_arrays(x, seen)
        return
    if isinstance(obj, dict):
        for k, x in list(obj.items()):
            if isinstance(x, np.ndarray) and not x.dtype.hasobject and not x.flags["C_CONTIGUOUS"]:
                obj[k] = np.ascontiguousarray(x)
            else:
                canonical_arrays(x, seen)
        return
    if type(obj).__module__.startswith(("sklearn.", "morphst.")) and hasattr(obj, "__dict__"):
        canonical_arrays(vars(obj), seen)


def _decode(v: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(v, list):
        return [_decode(x, arrays) for x in v]
    if not isinstance(v, dict):
        return v
    if "__ndarray__" in v:
        return arrays[int(v["__ndarray__"])]
    if "__dict__" in v:
        return {k: _decode(x, arrays) for k, x in v["__dict__"].items()}
    if "__tuple__" in v:
        return tuple(_decode(x, arrays) for x in v["__tuple__"])
    if "__items__" in v:
        return {_decode(k, arrays): _decode(x, arrays) for k, x in v["__items__"]}
    if "__float__" in v:
        return float(v["__float__"])
    if "__scalar__" in v:
        return np.dtype(v["__scalar__"]).type(_decode(v["value"], arrays))
    if "__strarray__" in v:
        return np.asarray(v["__strarray__"], dtype=object).reshape(v["shape"])
    if "__dtype__" in v:
        return np.dtype(v["__dtype__"])
    if "__randomstate__" in v:
        rs = np.random.RandomState()
        rs.set_state(_decode(v["__randomstate__"], arrays))
        return rs
    if "__type__" in v:
        mod, name = v["__type__"].split(":")
        if mod not in ("numpy", "builtins"):
            msg = f"type {v['__type__']!r} is not allowed"
            raise TypeError(msg)
        return getattr(importlib.import_module(mod), name)
    if "__saved_state__" in v:
        return _rebuild_hooked(v["__saved_state__"], _decode(v["state"], arrays))
    if "__object__" in v:
        mod, name = _MOVED_CLASSES.get(v["__object__"], v["__object__"]).split(":")
        if not mod.startswith(_ALLOWED_MODULES) and f"{mod}:{name}" not in _ALLOWED_CLASSES:
            msg = f"class {v['__object__']!r} is not allowed (only scikit-learn classes and morphst's FeatureHead are rebuilt)"
            raise TypeError(msg)
        cls = importlib.import_module(mod)
        for part in name.split("."):
            cls = getattr(cls, part)
        if not isinstance(cls, type):
            msg = f"{v['__object__']!r} is not a class"
            raise TypeError(msg)
        obj = cls.__new__(cls)
        obj.__dict__.update(_decode(v["state"], arrays))
        return obj
    msg = f"unknown entry with keys {sorted(v)}"
    raise TypeError(msg)


def _rebuild_hooked(name: str, state: Any) -> Any:
    """An object of a :data:`_HOOKED_CLASSES` class, rebuilt by its own ``_from_saved_state``."""
    if name not in _HOOKED_CLASSES:
        msg = f"class {name!r} is not allowed"
        raise TypeError(msg)
    if not isinstance(state, dict):
        msg = f"the saved state of {name!r} is not a dict"
        raise TypeError(msg)
    mod, qualname = name.split(":")
    cls = getattr(importlib.import_module(mod), qualname)
    try:
        return cls._from_saved_state(state)
    except (KeyError, TypeError, IndexError) as e:  # a state without the fields the class writes
        msg = f"the saved state of {qualname} is incomplete ({type(e).__name__}: {e})"
        raise ValueError(msg) from None
    except Exception as e:
        msg = f"its {qualname} cannot be rebuilt here ({type(e).__name__}: {e})"
        raise _NotRebuilt(msg) from None


# ----------------------------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    import sklearn

    from ... import __version__

    return {"morphst": str(__version__), "sklearn": sklearn.__version__, "numpy": np.__version__}


def write(path: str | os.PathLike, state: dict[str, Any], check=None) -> None:
    """Write ``state`` (the translator's attributes) to ``path`` atomically (a temporary file, then a rename).

    ``check``, if given, is called with the state rebuilt from the encoded form before anything is written (it
    raises TypeError when the rebuilt state would behave differently).

    Raises
    ------
    TypeError
        If part of the state (e.g. a third-party estimator's attribute) is neither arrays, numbers, strings nor a
        scikit-learn object, naming where it is.
    """
    enc = _Encoder()
    payload = enc(state, "translator")
    if check is not None:
        check(_decode(json.loads(json.dumps(payload)), [a.copy() for a in enc.arrays]))
    table, offset = [], 0
    for i, a in enumerate(enc.arrays):
        table.append({"key": i, "dtype": a.dtype.str, "shape": list(a.shape), "offset": offset, "nbytes": a.nbytes})
        offset += a.nbytes
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        "arrays": table,
        "payload": payload,
    }
    hbytes = json.dumps(header, allow_nan=False, separators=(",", ":")).encode("utf-8")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as fh:
            for chunk in (MAGIC, _LEN.pack(len(hbytes)), hbytes, *(a.tobytes() for a in enc.arrays)):
                fh.write(chunk)
                h.update(chunk)
            fh.write(h.digest())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _damaged(path, detail: str) -> TranslatorFileError:
    msg = (
        f"{path} is not a readable morphst translator file: {detail}. It is damaged or truncated (or was never a "
        "translator file); save it again from the fitted translator (`tr.save(path)`), or refit with "
        "`mst.tl.fit_translator`."
    )
    return TranslatorFileError(msg)


def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a file written by :func:`write`; returns ``(state, versions it was written with)``.

    Raises
    ------
    TranslatorFileError (a ValueError)
        Damaged, truncated, another format, a format version this morphst does not read, or a checksum mismatch.
    """
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        if data.startswith(_PICKLE_PREFIXES):
            msg = (
                f"{path} is in the old pickle (joblib) format of morphst's first releases, which this version no "
                "longer loads (a pickle can run any code when loaded). Refit with `mst.tl.fit_translator` and "
                "`save` again; or, only if you trust the file, `tr = joblib.load(path)` then `tr.save(new_path)`."
            )
            raise TranslatorFileError(msg)
        raise _damaged(path, "it does not start with the morphst translator signature")
    start = len(MAGIC) + _LEN.size
    if len(data) < start + _SHA_LEN:
        raise _damaged(path, f"only {len(data)} bytes")
    (hlen,) = _LEN.unpack_from(data, len(MAGIC))
    if start + hlen + _SHA_LEN > len(data):
        raise _damaged(path, f"the header says {hlen} bytes but the file ends before (truncated?)")
    try:
        header = json.loads(data[start : start + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _damaged(path, f"its header is not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        fmt = header.get("format") if isinstance(header, dict) else None
        raise _damaged(path, f"its header names the format {fmt!r}, not {FORMAT!r}")
    version = header.get("format_version")
    if version not in READABLE_VERSIONS:
        versions = header.get("versions", {}) if isinstance(header.get("versions"), dict) else {}
        msg = (
            f"{path} is a morphst translator file in format version {version!r} (written by morphst "
            f"{versions.get('morphst', '?')}); this morphst reads format versions {list(READABLE_VERSIONS)}. Load it with the "
            "morphst version that wrote it (or a newer one), or refit and save with this one."
        )
        raise TranslatorFileError(msg)
    body, digest = data[:-_SHA_LEN], data[-_SHA_LEN:]
    if hashlib.sha256(body).digest() != digest:
        raise _damaged(path, "its sha256 checksum does not match its content")
    try:
        blob = memoryview(body)[start + hlen :]
        arrays = []
        for entry in header["arrays"]:
            dt = np.dtype(entry["dtype"])
            if dt.hasobject:
                msg = f"object dtype {dt}"
                raise TypeError(msg)
            lo, n = int(entry["offset"]), int(entry["nbytes"])
            if lo + n > len(blob):
                msg = "an array lies beyond the end of the file"
                raise ValueError(msg)
            arrays.append(np.frombuffer(blob[lo : lo + n], dtype=dt).reshape(entry["shape"]).copy())
        state = _decode(header["payload"], arrays)
    except _NotRebuilt as e:
        msg = f"{path} is intact (its checksum matches), but {e}. Load it with the morphst and timm that wrote it."
        raise TranslatorFileError(msg) from None
    except (KeyError, TypeError, ValueError, AttributeError, ImportError, IndexError) as e:
        raise _damaged(path, f"its content cannot be rebuilt ({type(e).__name__}: {e})") from None
    return (state if version == FORMAT_VERSION else _from_version_1(state)), dict(header.get("versions", {}))


#: Attributes of a :class:`~morphst.tl.Translator` stored in its file, as ``Translator.__init__`` takes them.
TRANSLATOR_STATE = (
    "estimator", "genes", "recipe", "n_features", "blocks", "patch_params", "embed_params", "context_embed_params",
    "fit", "stain_reference",
)  # fmt: skip
#: Fields of the recipe that format version 1 kept in ``params`` (the rest of ``params`` is what the fit chose).
_V1_RECIPE = ("genes", "library_key", "scale_per_library", "context_rep", "global_context", "alphas", "random_state")


def _from_version_1(state: dict) -> dict:
    """A format-1 state as a format-2 one (``recipe`` and ``fit``).

    Format 1 spread the recipe over ``use_rep``, ``target``, ``spatial_context`` and ``params``.
    """
    params = dict(state.pop("params", None) or {})
    recipe = {k: params.pop(k) for k in _V1_RECIPE if k in params}
    for name in ("use_rep", "target", "spatial_context"):
        recipe[name] = state.pop(name)
    if "model" in params:
        recipe["regressor"] = params.pop("model")
    own = state["n_features"] // 2 if recipe["spatial_context"] else state["n_features"]
    state["blocks"] = state.get("blocks") or [("patch", int(own))]
    return {**state, "recipe": recipe, "fit": params}


def save_translator(path: str | os.PathLike, estimator, attributes: dict, applicability) -> None:
    """Write a translator's ``attributes`` (:data:`TRANSLATOR_STATE`) and applicability domain to ``path``.

    The estimator's arrays are made C-contiguous first (as stored), and the file is refused (``TypeError``) unless
    the rebuilt estimator predicts exactly as ``estimator`` on a fixed random probe.
    """
    canonical_arrays(estimator)  # C-order arrays, as stored: the same predictions before and after
    n_features = int(attributes["n_features"])
    state = {**attributes, "applicability": None if applicability is None else applicability.to_state()}

    def same_predictions(rebuilt: dict) -> None:
        probe = np.random.default_rng(0).normal(size=(3, n_features)).astype(np.float32)
        if not np.array_equal(np.asarray(estimator.predict(probe)), np.asarray(rebuilt["estimator"].predict(probe))):
            msg = f"the estimator {type(estimator).__name__} (its state is not all in its attributes)"
            raise TypeError(msg)

    try:
        write(path, state, check=same_predictions)
    except (_NotSavable, _NotRebuilt) as e:
        msg = f"This translator cannot be saved: {e}."
        raise TypeError(msg) from None
    except TypeError as e:
        msg = (
            f"This translator cannot be saved in morphst's format: {e} is neither arrays, numbers, strings nor "
            "a (pure-Python) scikit-learn object. Use `regressor='ridge'`, `'mlp'` or a scikit-learn regressor "
            "whose fitted state is arrays (linear models, SVR, MLP, ...)."
        )
        raise TypeError(msg) from None


def read_translator(path: str | os.PathLike) -> dict:
    """The state written by :func:`save_translator`; warns when it was written with another scikit-learn."""
    import sklearn

    from ... import _logging as logg

    state, versions = read(path)
    if versions.get("sklearn") not in (None, sklearn.__version__):
        logg.warning(
            f"{path} was saved with scikit-learn {versions['sklearn']}, this is {sklearn.__version__}; "
            "predictions may differ if the estimators changed between versions"
        )
    return state
