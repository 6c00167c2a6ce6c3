"""The quantized-weights file format: k-means codebook indices plus centroids, no pickle.

A file is a safetensors-style container::

    b"PASTICHE"                 8 bytes, magic
    header_length               8 bytes, uint64 little-endian
    header                      header_length bytes of UTF-8 JSON (space-padded to 8-byte alignment)
    payload                     raw little-endian buffers; header offsets count from here

The header holds ``format``, ``version``, ``arch``, ``preprocessing`` (what input the weights
expect), ``source`` (name and sha256 of what was compressed), free-form string ``metadata`` and
``layers``: a list, in network order, of ``{name, shape, bits, crc32, indices, centroids, bias}``
where the last three are ``[begin, end)`` byte ranges. Per layer the payload holds, contiguously:

* indices: at 8 bits, one uint8 per weight in row-major order. Below 8 bits the n weights are
  padded to 8*m and cut into 8 segments of m codes; group i packs code i of every segment into
  ``bits`` bytes (segment s at bit s*bits, little-endian), so the stream is dense (m*bits bytes),
  plus one zero byte so every code can be read through an unaligned 16-bit window.
* centroids: float32, exactly 2**bits of them (unused ones repeat the last).
* bias: float32, one per output channel.

``crc32`` covers the layer's three buffers. Reading validates everything before trusting it and
raises :class:`~pastiche.errors.PasticheError` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from .errors import PasticheError
from .files import atomic_file

MAGIC = b"PASTICHE"
FORMAT = "pastiche.quantized-weights"
VERSION = 1
_PREFIX = len(MAGIC) + 8
_MAX_HEADER = 1 << 20  # a VGG19 header is ~5 KB; anything near a MiB is not ours

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class QuantizedLayer:
    """One convolution: ``weight = centroids[indices].reshape(shape)`` and a bias.

    ``packed`` is the stored index stream (see the module docstring), uint8 1-D.
    """

    shape: Tuple[int, ...]
    bits: int
    packed: np.ndarray
    centroids: np.ndarray  # float32 (2**bits,)
    bias: np.ndarray  # float32 (shape[0],)

    @classmethod
    def from_indices(cls, indices: np.ndarray, centroids: np.ndarray, bias: np.ndarray,
                     *, bits: int) -> "QuantizedLayer":
        """Pack uint8 ``indices`` (any shape, values < 2**bits); pads centroids to 2**bits."""
        if not 1 <= bits <= 8:
            raise ValueError(f"bits must be 1..8, got {bits}")
        centroids = np.asarray(centroids, dtype=np.float32).ravel()
        if not 1 <= centroids.size <= 1 << bits:
            raise ValueError(f"{centroids.size} centroids do not fit {bits} bits")
        pad = np.full((1 << bits) - centroids.size, centroids[-1], dtype=np.float32)
        indices = np.asarray(indices)
        if indices.size and int(indices.max()) >= centroids.size:
            raise ValueError("an index points past the centroids")
        return cls(tuple(indices.shape), bits, pack(indices.astype(np.uint8).ravel(), bits),
                   np.concatenate([centroids, pad]), np.asarray(bias, dtype=np.float32).ravel())

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def indices(self) -> np.ndarray:
        """uint8 codebook indices with ``self.shape``."""
        return unpack(self.packed, self.bits, self.numel).reshape(self.shape)

    def dequantize(self) -> np.ndarray:
        """float32 weights with ``self.shape``; one table lookup per weight, no index copy."""
        return _dequantize(self.packed, self.bits, self.centroids, self.numel).reshape(self.shape)


@dataclass
class WeightsFile:
    """What a weights file holds: its header fields and its layers, in network order."""

    arch: str
    preprocessing: Dict
    layers: Dict[str, QuantizedLayer]
    source: Dict = field(default_factory=dict)
    metadata: Dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------- index packing

def packed_nbytes(numel: int, bits: int) -> int:
    return numel if bits == 8 else -(-numel // 8) * bits + 1


def pack(indices: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes (n,) → the stored stream (see module docstring)."""
    if bits == 8:
        return np.ascontiguousarray(indices, dtype=np.uint8)
    m = -(-indices.size // 8)
    segments = np.zeros(8 * m, np.uint64)
    segments[: indices.size] = indices
    groups = np.zeros(m, np.uint64)  # 8 codes of `bits` bits each: at most 56 bits used
    for s, segment in enumerate(segments.reshape(8, m)):
        groups |= segment << np.uint64(s * bits)
    stream = groups.astype("<u8").view(np.uint8).reshape(m, 8)[:, :bits].ravel()
    return np.concatenate([stream, np.zeros(1, np.uint8)])


def _segment_windows(packed: np.ndarray, bits: int, numel: int):
    """Yield (segment, uint16 window over its codes, shift) for each of the 8 segments."""
    m = -(-numel // 8)
    for s in range(8):
        byte, shift = divmod(s * bits, 8)
        # An unaligned, strided uint16 view: code s of group i sits at byte i*bits + byte.
        window = np.ndarray((m,), dtype="<u2", buffer=packed, offset=byte, strides=(bits,))
        yield s, window, shift


def unpack(packed: np.ndarray, bits: int, numel: int) -> np.ndarray:
    """The stored stream → uint8 codes (numel,)."""
    if bits == 8:
        return np.array(packed[:numel], dtype=np.uint8)
    m = -(-numel // 8)
    out = np.empty(8 * m, np.uint8)
    for s, window, shift in _segment_windows(packed, bits, numel):
        out[s * m: (s + 1) * m] = (window >> shift) & ((1 << bits) - 1)
    return out[:numel]


def _dequantize(packed: np.ndarray, bits: int, centroids: np.ndarray, numel: int) -> np.ndarray:
    if bits == 8:
        return np.take(centroids, packed, mode="wrap")
    # Look each 16-bit window up in a 65536-entry table that already applies shift and mask:
    # one gather per weight, the same cost as the 8-bit path.
    m = -(-numel // 8)
    out = np.empty(8 * m, np.float32)
    tables: Dict[int, np.ndarray] = {}
    for s, window, shift in _segment_windows(packed, bits, numel):
        if shift not in tables:
            # table[w] = centroids[(w >> shift) & mask], built by repeat and tile (no gather).
            tables[shift] = np.tile(np.repeat(centroids, 1 << shift), 1 << (16 - shift - bits))
        np.take(tables[shift], window, out=out[s * m: (s + 1) * m], mode="wrap")
    return out[:numel]


# ---------------------------------------------------------------------------- writing

def save_file(weights: WeightsFile, path: PathLike) -> None:
    """Write ``weights`` to ``path`` atomically (:func:`pastiche.files.atomic_file`)."""
    entries, buffers, offset = [], [], 0
    for name, layer in weights.layers.items():
        parts = [layer.packed.astype(np.uint8).tobytes(), layer.centroids.astype("<f4").tobytes(),
                 layer.bias.astype("<f4").tobytes()]
        ranges = []
        for part in parts:
            ranges.append([offset, offset + len(part)])
            offset += len(part)
        crc = zlib.crc32(b"".join(parts))
        entries.append({"name": name, "shape": list(layer.shape), "bits": layer.bits, "crc32": crc,
                        "indices": ranges[0], "centroids": ranges[1], "bias": ranges[2]})
        buffers.extend(parts)
    header = {"format": FORMAT, "version": VERSION, "arch": weights.arch,
              "preprocessing": weights.preprocessing, "source": weights.source,
              "metadata": weights.metadata, "layers": entries}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with atomic_file(Path(path)) as tmp, open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<Q", len(text)) + text)
        for buffer in buffers:
            f.write(buffer)


# ---------------------------------------------------------------------------- reading

def read_header(path: PathLike, *, header_sha256: Optional[str] = None) -> Tuple[Dict, memoryview]:
    """Read and validate ``path``; return (header, payload). The one gate before trusting a file.
    ``header_sha256``: the header's known hash (a bundled file's), which, as the header lists each
    layer's crc32, pins every byte a load reads. The payload is read only once the header has
    checked out against the file's size: a wrong file costs no more memory than its header."""

    def bad(problem: str) -> PasticheError:
        return PasticheError(f"invalid weights file '{path}': {problem}; "
                             "rebuild it with pastiche-compress or reinstall pastiche")

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a pipe would be waited on, maybe forever
            raise bad("it is not a regular file")
        with open(path, "rb", buffering=0) as f:  # unbuffered: the payload is read once, not copied
            prefix, size = f.read(_PREFIX), os.fstat(f.fileno()).st_size
            if len(prefix) < _PREFIX or prefix[: len(MAGIC)] != MAGIC:
                raise bad("not a pastiche weights file (bad magic bytes)")
            (length,) = struct.unpack_from("<Q", prefix, len(MAGIC))
            if length > _MAX_HEADER:
                raise bad(f"header length {length} is over the {_MAX_HEADER} bytes any pastiche header takes")
            if _PREFIX + length > size:
                raise bad(f"header length {length} does not fit the file's {size} bytes (truncated?)")
            text = f.read(length)
            if header_sha256 and hashlib.sha256(text).hexdigest() != header_sha256:
                raise PasticheError(f"bundled weights file '{path}' has been changed or replaced (its"
                                    " header's sha256 is not the one this pastiche shipped); reinstall pastiche")
            header = _checked_header(text, size - _PREFIX - length, bad)
            payload = f.read(size - _PREFIX - length)
    except OSError as e:
        raise PasticheError(f"cannot read weights file '{path}': {e.strerror or e}; check the path and"
                            " its permissions") from None
    if len(text) != length or len(payload) != size - _PREFIX - length:
        raise bad("the file changed while it was read")
    return header, memoryview(payload)


def _checked_header(text: bytes, payload_size: int, bad) -> Dict:
    """The header parsed from ``text`` (JSON), if it describes weights whose layers fill exactly
    ``payload_size`` bytes."""
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as e:  # ValueError: JSON's, UTF-8's, a 5,000-digit number's
        raise bad(f"header is not valid JSON ({str(e)[:80]})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise bad("header does not describe pastiche quantized weights")
    version = header.get("version")
    if version != VERSION:
        newer = _count(version) and version > VERSION
        raise bad(f"format version {version!r}, this pastiche reads version {VERSION}"
                  + (" (upgrade pastiche)" if newer else ""))
    _check_preprocessing(header.get("preprocessing"), bad)
    if not (isinstance(header.get("arch", ""), str) and all(isinstance(header.get(k, {}), dict)
                                                            for k in ("source", "metadata"))):
        raise bad("header's arch, source or metadata is of the wrong type")
    end = 0
    for entry in _checked_layers(header, bad):
        for key in ("indices", "centroids", "bias"):
            begin, stop = entry[key]
            if begin != end or stop < begin:
                raise bad(f"layer {entry['name']}: {key} buffer is not where the header says")
            end = stop
        if end > payload_size:
            raise bad(f"payload is {payload_size} bytes but layer {entry['name']} ends at {end}"
                      " (file truncated)")
    if end != payload_size:
        raise bad(f"{payload_size - end} unexpected bytes after the last layer")
    return header


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: object, low: float, high: float) -> bool:
    """Whether ``value`` is a JSON number from ``low`` to ``high`` (NaN is not; a huge integer
    compares without overflow)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def _check_preprocessing(pre: object, bad) -> None:
    """The input convention: channel order, a scale and 3 standard deviations from 1e-6 to 1e6,
    and 3 means within ±1e6. Real conventions use 1 or 255, ~0.2 or 1, ~0.5 or ~120; beyond these
    bounds float32 arithmetic (vgg.preprocessing_affine's, then the network's) runs out of range."""
    def three(key: str, low: float, high: float) -> bool:
        values = pre.get(key)
        return isinstance(values, list) and len(values) == 3 and all(_number(v, low, high) for v in values)

    if not (isinstance(pre, dict) and pre.get("channel_order") in ("RGB", "BGR") and three("mean", -1e6, 1e6)
            and three("std", 1e-6, 1e6) and _number(pre.get("scale"), 1e-6, 1e6)):
        raise bad(f"bad preprocessing {str(pre)[:120]}")


def _checked_layers(header: Dict, bad) -> List[Dict]:
    """Check each layer entry's types and that its buffer sizes agree with shape and bits."""
    layers = header.get("layers")
    if not isinstance(layers, list) or not layers:
        raise bad("header lists no layers")
    names = set()
    for entry in layers:
        try:
            name, shape, bits, crc = entry["name"], entry["shape"], entry["bits"], entry["crc32"]
            ranges = [entry[key] for key in ("indices", "centroids", "bias")]
        except (KeyError, TypeError):
            raise bad(f"malformed layer entry {str(entry)[:80]}") from None
        if not (isinstance(name, str) and _count(crc) and crc < 2 ** 32 and all(
                isinstance(r, list) and len(r) == 2 and all(map(_count, r)) for r in ranges)):
            raise bad(f"malformed layer entry {str(entry)[:80]}")
        if name in names:
            raise bad(f"layer {name} is listed twice")
        names.add(name)
        sizes = dict(zip(("indices", "centroids", "bias"), (stop - begin for begin, stop in ranges)))
        if not (_count(bits) and 1 <= bits <= 8):
            raise bad(f"layer {name}: bad bits {str(bits)[:20]} (a whole number from 1 to 8)")
        # bounded, so that sizes computed from it stay small numbers (a kernel is 4-D)
        if not (isinstance(shape, list) and 1 <= len(shape) <= 8 and all(_count(d) and 0 < d <= 2 ** 31 for d in shape)):
            raise bad(f"layer {name}: bad shape {str(shape)[:80]} (1 to 8 whole numbers from 1 to 2**31)")
        expected = {"indices": packed_nbytes(math.prod(shape), bits),
                    "centroids": 4 << bits, "bias": 4 * shape[0]}
        for key, nbytes in expected.items():
            if sizes[key] != nbytes:
                raise bad(f"layer {name}: {key} is {sizes[key]} bytes, expected {nbytes}"
                          f" for shape {shape} at {bits} bits")
    return layers


def _layer(entry: Dict, payload: memoryview, path: PathLike) -> QuantizedLayer:
    begin, end = entry["indices"][0], entry["bias"][1]
    if zlib.crc32(payload[begin:end]) != entry["crc32"]:
        raise PasticheError(f"invalid weights file '{path}': layer {entry['name']} fails its"
                            " crc32 check (corrupted); reinstall pastiche or rebuild the file")
    view = lambda key, dtype: np.frombuffer(payload[slice(*entry[key])], dtype=dtype)  # noqa: E731
    centroids, bias = view("centroids", "<f4"), view("bias", "<f4")
    if not (np.isfinite(centroids).all() and np.isfinite(bias).all()):
        raise PasticheError(f"invalid weights file '{path}': layer {entry['name']} holds NaN or infinite"
                            " values; rebuild it with pastiche-compress from a sound source")
    return QuantizedLayer(tuple(entry["shape"]), entry["bits"], view("indices", np.uint8), centroids, bias)


def load_file(path: PathLike) -> WeightsFile:
    """Read, validate and checksum ``path``; the layers stay quantized (views into the file)."""
    header, payload = read_header(path)
    layers = {e["name"]: _layer(e, payload, path) for e in header["layers"]}
    return WeightsFile(header.get("arch", ""), header.get("preprocessing", {}), layers,
                       header.get("source", {}), header.get("metadata", {}))


def load_dequantized(path: PathLike, *, names: Optional[List[str]] = None, threads: Optional[int] = None,
                     indexed: bool = False, header_sha256: Optional[str] = None
                     ) -> Tuple[Dict, Dict[str, Tuple[np.ndarray, ...]]]:
    """Validate ``path`` and return (header, {name: (float32 weight, float32 bias)}), or with
    ``indexed`` {name: (uint8 indices, float32 centroids, float32 bias)} (weights left quantized).

    Checksums and table lookups of different layers run in a thread pool (numpy releases the GIL),
    largest layers first. ``names`` limits which layers are materialised (all by default). The
    arrays are copies: the file's bytes are freed on return. ``header_sha256``: see read_header.
    """
    header, payload = read_header(path, header_sha256=header_sha256)
    entries = [e for e in header["layers"] if names is None or e["name"] in names]

    def work(entry: Dict) -> Tuple[np.ndarray, ...]:
        layer = _layer(entry, payload, path)
        if indexed:
            return layer.indices(), layer.centroids.copy(), layer.bias.copy()
        return layer.dequantize(), layer.bias.copy()

    entries.sort(key=lambda e: -math.prod(e["shape"]))
    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
        results = dict(zip((e["name"] for e in entries), pool.map(work, entries)))
    return header, {e["name"]: results[e["name"]] for e in header["layers"] if e["name"] in results}
