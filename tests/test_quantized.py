"""Tests for pastiche.quantized: exact round trips, pinned bytes, and one clear error per bad file."""

import json
import os
import struct
import zlib

import numpy as np
import pytest

from pastiche.errors import PasticheError
from pastiche.quantized import (
    FORMAT,
    MAGIC,
    VERSION,
    QuantizedLayer,
    WeightsFile,
    load_dequantized,
    load_file,
    pack,
    packed_nbytes,
    read_header,
    save_file,
    unpack,
)

PRE = {"channel_order": "RGB", "scale": 1.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
SHAPES = [(1, 1, 1, 1), (5, 3, 3, 3), (7, 2, 3, 3), (16, 8, 3, 3), (3, 1, 1, 1)]


def _random_layer(rng, shape, bits, k=None):
    k = k or (1 << bits)
    indices = rng.integers(0, k, size=shape).astype(np.uint8)
    centroids = np.sort(rng.standard_normal(k)).astype(np.float32)
    bias = rng.standard_normal(shape[0]).astype(np.float32)
    return indices, centroids, bias


def _small_file(path, bits=3):
    """A valid two-layer file; returns its bytes."""
    rng = np.random.default_rng(7)
    layers = {}
    for name, shape in (("a", (4, 3, 3, 3)), ("b", (2, 4, 3, 3))):
        idx, cen, bias = _random_layer(rng, shape, bits)
        layers[name] = QuantizedLayer.from_indices(idx, cen, bias, bits=bits)
    save_file(WeightsFile("test", PRE, layers), path)
    return path.read_bytes()


def _split(data):
    (length,) = struct.unpack_from("<Q", data, 8)
    return json.loads(data[16:16 + length]), data[16 + length:]


def _join(header, payload):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return MAGIC + struct.pack("<Q", len(text)) + text + payload


# ---------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("bits", range(1, 9))
def test_round_trip_every_width(tmp_path, bits):
    rng = np.random.default_rng(bits)
    shapes = SHAPES + [tuple(int(d) for d in rng.integers(1, 9, size=4))]
    originals = {}
    layers = {}
    for i, shape in enumerate(shapes):
        idx, cen, bias = _random_layer(rng, shape, bits)
        originals[f"l{i}"] = (idx, cen, bias)
        layer = QuantizedLayer.from_indices(idx, cen, bias, bits=bits)
        assert layer.packed.size == packed_nbytes(idx.size, bits)
        assert np.array_equal(layer.indices(), idx)
        layers[f"l{i}"] = layer
    path = tmp_path / "w.pqw"
    save_file(WeightsFile("test", PRE, layers, {"name": "x"}, {"k": "v"}), path)
    loaded = load_file(path)
    assert list(loaded.layers) == list(layers)
    assert loaded.arch == "test" and loaded.preprocessing == PRE
    assert loaded.source == {"name": "x"} and loaded.metadata == {"k": "v"}
    header, dequantized = load_dequantized(path)
    assert list(dequantized) == list(layers)
    _, indexed = load_dequantized(path, indexed=True)
    for name, (idx, cen, bias) in originals.items():
        got = loaded.layers[name]
        assert got.shape == idx.shape and got.bits == bits
        assert got.indices().dtype == np.uint8
        assert np.array_equal(got.indices(), idx)
        assert np.array_equal(got.centroids, cen)
        assert np.array_equal(got.bias, bias)
        expected = cen[idx.astype(np.int64)]
        w = got.dequantize()
        assert w.dtype == np.float32 and w.shape == idx.shape
        assert np.array_equal(w, expected)
        dw, db = dequantized[name]
        assert np.array_equal(dw, expected) and np.array_equal(db, bias)
        ii, ic, ib = indexed[name]
        assert ii.dtype == np.uint8 and np.array_equal(ii, idx)
        assert np.array_equal(ic[:cen.size], cen) and np.array_equal(ib, bias)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", [1, 7, 8, 9, 15, 16, 17, 135, 1000])
def test_pack_unpack_inverse(bits, n):
    rng = np.random.default_rng(n * 10 + bits)
    codes = rng.integers(0, 1 << bits, size=n).astype(np.uint8)
    packed = pack(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == packed_nbytes(n, bits)
    assert np.array_equal(unpack(packed, bits, n), codes)


def test_fewer_centroids_are_padded_with_the_last():
    layer = QuantizedLayer.from_indices(np.array([[0, 1, 2]], np.uint8), [1.0, 2.0, 3.0], [0.5], bits=3)
    assert layer.centroids.tolist() == [1.0, 2.0, 3.0] + [3.0] * 5
    assert layer.dequantize().tolist() == [[1.0, 2.0, 3.0]]


def test_from_indices_rejects_bad_input():
    with pytest.raises(ValueError):
        QuantizedLayer.from_indices(np.zeros(4, np.uint8), [0.0], [0.0], bits=9)
    with pytest.raises(ValueError):
        QuantizedLayer.from_indices(np.zeros(4, np.uint8), np.zeros(3), [0.0], bits=1)
    with pytest.raises(ValueError):
        QuantizedLayer.from_indices(np.array([2], np.uint8), [0.0, 1.0], [0.0], bits=1)


# ---------------------------------------------------------------------------- pinned bytes

def test_pack_layout_pinned():
    # n=9 codes, bits=1: m = ceil(9/8) = 2, padded to 16 codes, cut into 8 segments of 2:
    #   seg0=[1,0] seg1=[1,1] seg2=[0,0] seg3=[0,1] seg4=[1,0] seg5=[0,0] seg6=[0,0] seg7=[0,0]
    # group i holds code i of segment s at bit s*bits:
    #   group0 = bits {0,1,4} = 0b00010011 = 0x13; group1 = bits {1,3} = 0b00001010 = 0x0A
    # then one zero byte.
    codes = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1], np.uint8)
    packed = pack(codes, 1)
    assert packed.tobytes() == b"\x13\x0a\x00"
    assert np.array_equal(unpack(packed, 1, 9), codes)


def test_pack_layout_pinned_3_bits():
    # n=8, bits=3: m=1, one group; code s at bit 3*s: 1 | 2<<3 | 3<<6 | 4<<9 | 5<<12 | 6<<15 | 7<<18
    codes = np.arange(1, 9, dtype=np.uint8) % 8
    value = sum(int(c) << (3 * s) for s, c in enumerate(codes))
    assert value == 0o07654321
    packed = pack(codes, 3)
    assert packed.tobytes() == value.to_bytes(3, "little") + b"\x00"
    assert np.array_equal(unpack(packed, 3, 8), codes)


def test_file_bytes_pinned(tmp_path):
    layer = QuantizedLayer.from_indices(np.array([1, 0], np.uint8).reshape(2, 1, 1, 1),
                                        [0.5, -2.0], [0.25, 1.0], bits=1)
    path = tmp_path / "tiny.pqw"
    save_file(WeightsFile("tiny", PRE, {"only": layer}), path)
    data = path.read_bytes()
    assert data[:8] == b"PASTICHE"
    (length,) = struct.unpack("<Q", data[8:16])
    assert length % 8 == 0
    header = json.loads(data[16:16 + length])
    text = data[16:16 + length]
    assert text.rstrip(b" ").endswith(b"}") and len(text) - len(text.rstrip(b" ")) < 8
    payload = data[16 + length:]
    expected_payload = (
        b"\x01\x00"  # indices: codes [1, 0] at bits 0 and 1 → 0x01, plus the zero byte
        b"\x00\x00\x00\x3f\x00\x00\x00\xc0"  # centroids 0.5, -2.0 (float32 LE)
        b"\x00\x00\x80\x3e\x00\x00\x80\x3f"  # bias 0.25, 1.0
    )
    assert payload == expected_payload
    assert len(data) == 16 + length + 18
    assert header["format"] == FORMAT and header["version"] == VERSION
    assert header["layers"] == [{"name": "only", "shape": [2, 1, 1, 1], "bits": 1,
                                 "crc32": zlib.crc32(expected_payload),
                                 "indices": [0, 2], "centroids": [2, 10], "bias": [10, 18]}]
    assert load_file(path).layers["only"].dequantize().ravel().tolist() == [-2.0, 0.5]


def test_save_is_atomic_and_leaves_no_temp(tmp_path):
    _small_file(tmp_path / "w.pqw")
    assert [p.name for p in tmp_path.iterdir()] == ["w.pqw"]


# ---------------------------------------------------------------------------- bad files

def _expect_error(path, pattern):
    with pytest.raises(PasticheError, match=pattern) as info:
        load_file(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    # read_header and load_dequantized are the same gate
    with pytest.raises(PasticheError, match=pattern):
        load_dequantized(path)
    return msg


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.pqw", "cannot read")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pqw"
    path.write_bytes(b"")
    _expect_error(path, "magic")


def test_wrong_magic(tmp_path):
    path = tmp_path / "w.pqw"
    data = _small_file(path)
    path.write_bytes(b"PASTICHF" + data[8:])
    _expect_error(path, "magic")


def test_header_length_beyond_file(tmp_path):
    path = tmp_path / "w.pqw"
    data = _small_file(path)
    path.write_bytes(data[:8] + struct.pack("<Q", len(data)) + data[16:])
    _expect_error(path, "header length")
    path.write_bytes(data[:8] + struct.pack("<Q", 2 ** 63) + data[16:])
    _expect_error(path, "header length 9223372036854775808 is over the 1048576 bytes any pastiche header takes")
    path.write_bytes(data[:8] + struct.pack("<Q", (1 << 20) + 8) + data[16:] + bytes(2 << 20))  # not truncated
    _expect_error(path, "is over the 1048576 bytes")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "w.pqw")
    _expect_error(tmp_path / "w.pqw", "it is not a regular file")


def test_header_not_json(tmp_path):
    path = tmp_path / "w.pqw"
    data = _small_file(path)
    (length,) = struct.unpack_from("<Q", data, 8)
    path.write_bytes(data[:16] + b"{" * length + data[16 + length:])
    _expect_error(path, "not valid JSON")
    path.write_bytes(data[:16] + b"\xff" * length + data[16 + length:])
    _expect_error(path, "not valid JSON")


def test_wrong_format(tmp_path):
    path = tmp_path / "w.pqw"
    header, payload = _split(_small_file(path))
    header["format"] = "something-else"
    path.write_bytes(_join(header, payload))
    _expect_error(path, "does not describe pastiche")
    path.write_bytes(_join([1, 2, 3], payload))
    _expect_error(path, "does not describe pastiche")


def test_wrong_version(tmp_path):
    path = tmp_path / "w.pqw"
    header, payload = _split(_small_file(path))
    header["version"] = VERSION + 1
    path.write_bytes(_join(header, payload))
    msg = _expect_error(path, "version")
    assert str(VERSION + 1) in msg


def test_shape_disagrees_with_buffers(tmp_path):
    path = tmp_path / "w.pqw"
    header, payload = _split(_small_file(path))
    header["layers"][0]["shape"] = [4, 3, 3, 2]
    path.write_bytes(_join(header, payload))
    _expect_error(path, "expected")
    header["layers"][0]["shape"] = [5, 3, 3, 3]  # same packed size at 3 bits? bias differs anyway
    path.write_bytes(_join(header, payload))
    _expect_error(path, "expected")


def test_bad_bits_and_malformed_entries(tmp_path):
    path = tmp_path / "w.pqw"
    header, payload = _split(_small_file(path))
    shape = header["layers"][0]["shape"]
    for bad, pattern in ((dict(header["layers"][0], bits=9), "bad bits 9 "),
                         (dict(header["layers"][0], bits="8"), "bad bits 8 "),
                         (dict(header["layers"][0], bits=True), "bad bits True "),
                         (dict(header["layers"][0], shape=[0, 3, 3, 3]), "bad shape"),
                         # sizes from these would be numbers too long to print, or arrays numpy cannot make
                         (dict(header["layers"][0], shape=[10 ** 9] * 600), "bad shape"),
                         (dict(header["layers"][0], shape=shape + [1] * 61), "bad shape"),
                         ({"name": "a"}, "malformed")):
        h = dict(header, layers=[bad] + header["layers"][1:])
        path.write_bytes(_join(h, payload))
        _expect_error(path, pattern)
    path.write_bytes(_join(dict(header, layers=[]), payload))
    _expect_error(path, "no layers")


def test_truncated_payload(tmp_path):
    path = tmp_path / "w.pqw"
    data = _small_file(path)
    path.write_bytes(data[:-1])
    _expect_error(path, "truncated")


def test_trailing_bytes(tmp_path):
    path = tmp_path / "w.pqw"
    data = _small_file(path)
    path.write_bytes(data + b"\x00" * 3)
    _expect_error(path, "3 unexpected bytes")


@pytest.mark.parametrize("where", ["indices", "centroids", "bias"])
def test_flipped_payload_byte(tmp_path, where):
    path = tmp_path / "w.pqw"
    data = _small_file(path)
    header, payload = _split(data)
    entry = header["layers"][1]
    pos = len(data) - len(payload) + entry[where][0]
    corrupted = bytearray(data)
    corrupted[pos] ^= 0x10
    path.write_bytes(bytes(corrupted))
    read_header(path)  # structure is fine; only the checksum can tell
    msg = _expect_error(path, "crc32")
    assert "layer b" in msg


def _entry(header, **changes):
    return dict(header, layers=[dict(header["layers"][0], **changes)] + header["layers"][1:])


@pytest.mark.parametrize("change, pattern", [
    (dict(indices=[0, 54, 5]), "malformed"),  # a third number in a byte range
    (dict(indices=[0.0, 54.0]), "malformed"),  # float offsets: 0.0 == 0, then a slice of floats
    (dict(indices=[True, 54]), "malformed"),
    (dict(name=["a"]), "malformed"),  # unhashable
    (dict(crc32="2280803425"), "malformed"),  # a string: always "corrupted" before
    (dict(crc32=2 ** 32), "malformed"),
])
def test_entries_of_the_wrong_type_stop_at_the_gate(tmp_path, change, pattern):
    """Found by a review: each passed the gate and failed later with a TypeError or ValueError."""
    path = tmp_path / "w.pqw"
    header, payload = _split(_small_file(path))
    path.write_bytes(_join(_entry(header, **change), payload))
    _expect_error(path, pattern)


def test_a_layer_listed_twice_is_refused(tmp_path):
    path = tmp_path / "w.pqw"
    header, payload = _split(_small_file(path))
    path.write_bytes(_join(_entry(header, name="b"), payload))
    _expect_error(path, "layer b is listed twice")


@pytest.mark.parametrize("pre", [
    [1, 2, 3], dict(PRE, mean="abc"), dict(PRE, std=[0.0, 1.0, 1.0]), dict(PRE, scale=float("nan")),
    dict(PRE, scale=-1.0), dict(PRE, mean=[0.0, 0.0]), dict(PRE, channel_order="GBR"), dict(PRE, scale=True),
    # too big for a float, or out of float32's range once used
    dict(PRE, mean=[10 ** 400, 1, 1]), dict(PRE, scale=10 ** 400), dict(PRE, scale=1e300),
    dict(PRE, std=[1e-300, 1.0, 1.0]), dict(PRE, mean=[1e300, 0.0, 0.0]), dict(PRE, std=[-1.0, 1.0, 1.0])])
def test_bad_preprocessing_stops_at_the_gate(tmp_path, pre):
    path = tmp_path / "w.pqw"
    header, payload = _split(_small_file(path))
    path.write_bytes(_join(dict(header, preprocessing=pre), payload))  # json writes and reads NaN
    _expect_error(path, "bad preprocessing")


def test_a_big_file_that_is_not_weights_is_refused_from_its_first_bytes(tmp_path):
    """The payload is read only after the header checks out: a (sparse) 1 GB file is not read."""
    import tracemalloc

    path = tmp_path / "video.mp4"
    with open(path, "wb") as f:
        f.truncate(1 << 30)
    data = _small_file(tmp_path / "w.pqw")
    tracemalloc.start()
    try:
        _expect_error(path, "bad magic bytes")
        with open(path, "wb") as f:  # our magic and header, then far more payload than it lists
            f.write(data)
            f.truncate(1 << 30)
        _expect_error(path, "unexpected bytes after the last layer")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_a_newer_format_version_asks_for_an_upgrade_and_others_do_not(tmp_path):
    path = tmp_path / "w.pqw"
    header, payload = _split(_small_file(path))
    path.write_bytes(_join(dict(header, version=2), payload))
    assert _expect_error(path, "format version 2,").endswith("reads version 1 (upgrade pastiche); rebuild it"
                                                             " with pastiche-compress or reinstall pastiche")
    path.write_bytes(_join(dict(header, version="1"), payload))
    assert "upgrade" not in _expect_error(path, "format version '1',")


def test_headers_that_break_the_json_parser_stop_at_the_gate(tmp_path):
    path = tmp_path / "w.pqw"
    header, payload = _split(_small_file(path))
    for text in (json.dumps(header)[:-1] + ',"x":' + "[" * 100000 + "]" * 100000 + "}",  # recursion
                 json.dumps(header)[:-1] + ',"x":' + "9" * 5000 + "}"):  # over int's digit limit
        data = text.encode() + b" " * (-len(text) % 8)
        path.write_bytes(MAGIC + struct.pack("<Q", len(data)) + data + payload)
        _expect_error(path, "not valid JSON")
    path.write_bytes(_join(dict(header, metadata=[1]), payload))
    _expect_error(path, "wrong type")


def test_non_finite_centroids_are_refused(tmp_path):
    path = tmp_path / "w.pqw"
    data = bytearray(_small_file(path))
    header, payload = _split(bytes(data))
    entry = header["layers"][0]
    start = len(data) - len(payload) + entry["centroids"][0]
    data[start:start + 4] = struct.pack("<f", float("nan"))
    begin, end = entry["indices"][0], entry["bias"][1]
    header["layers"][0]["crc32"] = zlib.crc32(bytes(data[len(data) - len(payload):])[begin:end])  # a sound checksum
    path.write_bytes(_join(header, bytes(data[len(data) - len(payload):])))
    _expect_error(path, "layer a holds NaN or infinite values")
