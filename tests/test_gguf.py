import shutil
import struct

import pytest

from pytest_axion.errors import ModelFileError
from pytest_axion.machine import gguf
from pytest_axion.machine.gguf import read_gguf_info


def gguf_bytes(*, version=3, tensors=(("a", (4, 2)), ("b", (8,))), kvs=None, tensor_count=None):
    """A tiny valid GGUF: general.architecture plus F32 tensors laid out back to back."""
    def string(text):
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    kvs = kvs if kvs is not None else [("general.architecture", 8, string("llama")),
                                       ("general.file_type", 4, struct.pack("<I", 0)),
                                       ("llama.context_length", 4, struct.pack("<I", 2048)),
                                       ("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 3) + b"\0" * 12)]
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, tensor_count if tensor_count is not None else len(tensors),
                                          len(kvs)))
    for key, value_type, payload in kvs:
        out += string(key) + struct.pack("<I", value_type) + payload
    offset = 0
    for name, dims in tensors:
        out += string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", 0, offset)  # type 0 = F32
        n = 1
        for d in dims:
            n *= d
        offset += 4 * n
    out += b"\0" * (-len(out) % 32)
    return bytes(out) + b"\1" * offset


def write(tmp_path, data, name="m.gguf"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def assert_one_line_error(path, *hints):
    with pytest.raises(ModelFileError) as err:
        read_gguf_info(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for hint in hints:
        assert hint in message, message
    return message


def test_real_embedded_model(model_path):
    info = read_gguf_info(model_path)
    assert (info.version, info.architecture, info.file_type, info.file_type_source) == (
        3, "llama", "Q4_1", "general.file_type")
    assert 100e6 < info.n_params < 200e6 and info.n_tensors > 100
    assert info.required_size_bytes <= info.size_bytes and info.context_length == 8192
    assert not info.unknown_tensor_types
    assert all(len(str(v)) <= 256 for v in info.metadata.values())


def test_synthetic_file_parses_with_exact_counts(tmp_path):
    data = gguf_bytes()
    info = read_gguf_info(write(tmp_path, data))
    assert (info.n_tensors, info.n_params, info.file_type, info.context_length) == (2, 16, "F32", 2048)
    assert info.required_size_bytes == len(data) == info.size_bytes


def test_one_byte_short_is_truncated(tmp_path):
    path = write(tmp_path, gguf_bytes()[:-1])
    message = assert_one_line_error(path, "truncated", "fetch or copy the file again")
    assert f"is {len(gguf_bytes()) - 1:,} bytes but its header needs {len(gguf_bytes()):,}" in message


def test_missing_file(tmp_path):
    assert_one_line_error(tmp_path / "nope.gguf", "not found", "--axion-model", "pytest-axion[model]")


def test_directory(tmp_path):
    assert_one_line_error(tmp_path, "directory")


def test_zero_bytes(tmp_path):
    assert_one_line_error(write(tmp_path, b""), "zero bytes")


@pytest.mark.parametrize("content, hint", [
    (b"just some text, not a model at all", "--axion-model"),
    (b"<!DOCTYPE html><html><body>Not found</body></html>", "HTML page"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 98362432\n", "git lfs pull"),
    (b"GG", "--axion-model"),
])
def test_not_gguf(tmp_path, content, hint):
    assert_one_line_error(write(tmp_path, content), "not a GGUF file", hint)


@pytest.mark.parametrize("version, hint", [(1, "obsolete"), (99, "unsupported GGUF version 99")])
def test_unsupported_versions(tmp_path, version, hint):
    assert_one_line_error(write(tmp_path, gguf_bytes(version=version)), hint)


def test_big_endian(tmp_path):
    data = b"GGUF" + struct.pack(">I", 3) + gguf_bytes()[8:]
    assert_one_line_error(write(tmp_path, data), "big-endian")


@pytest.mark.parametrize("n_bytes", [10, 24, 1000, 100_000])
def test_header_cut_short_in_the_real_model(tmp_path, model_path, n_bytes):
    with open(model_path, "rb") as handle:
        head = handle.read(n_bytes)
    assert_one_line_error(write(tmp_path, head), "truncated")


def test_data_cut_short_in_the_real_model(tmp_path, model_path):
    cut = tmp_path / "cut.gguf"
    with open(model_path, "rb") as source, open(cut, "wb") as target:
        shutil.copyfileobj(source, target)
        target.truncate(int(model_path.stat().st_size * 0.6))
    assert_one_line_error(cut, "truncated", "but its header needs")


def test_absurd_tensor_count_is_corruption_not_memory_error(tmp_path):
    assert_one_line_error(write(tmp_path, gguf_bytes(tensor_count=2**60)), "corrupt")


def test_unreadable_file(tmp_path, monkeypatch):
    path = write(tmp_path, gguf_bytes())

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(gguf, "open", refuse, raising=False)
    assert_one_line_error(path, "not readable", "permissions")


def test_quantization_falls_back_to_the_largest_tensor_type(tmp_path):
    kvs = [("general.architecture", 8, struct.pack("<Q", 5) + b"llama")]
    info = read_gguf_info(write(tmp_path, gguf_bytes(kvs=kvs)))
    assert (info.file_type, info.file_type_source) == ("F32", "tensors")


def test_only_the_header_is_read_not_the_weights(model_path, monkeypatch):
    bytes_read = []
    real_open = open

    class CountingFile:
        def __init__(self, handle):
            self.handle = handle

        def read(self, n=-1):
            data = self.handle.read(n)
            bytes_read.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(gguf, "open", lambda *a, **k: CountingFile(real_open(*a, **k)), raising=False)
    read_gguf_info(model_path)
    assert 0 < sum(bytes_read) < 5_000_000 < model_path.stat().st_size


@pytest.mark.parametrize("chunk", [9, 64, 1 << 20])
def test_a_vocabulary_is_skipped_across_chunk_edges_and_a_cut_inside_it_is_truncation(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(gguf, "_SKIP_CHUNK", chunk)
    words = [b"", b"a", b"tok" * 30, b"x" * 200, *(b"w%d" % i for i in range(500))]
    vocabulary = struct.pack("<IQ", 8, len(words)) + b"".join(struct.pack("<Q", len(w)) + w for w in words)
    kvs = [("general.architecture", 8, struct.pack("<Q", 5) + b"llama"), ("tokenizer.ggml.tokens", 9, vocabulary),
           ("llama.context_length", 4, struct.pack("<I", 77))]
    data = gguf_bytes(kvs=kvs)
    info = read_gguf_info(write(tmp_path, data))
    # the key after the vocabulary and the tensor table after it are read where they are
    assert info.context_length == 77 and info.n_tensors == 2 and info.n_params == 16
    inside = data.index(b"x" * 200) + 100
    assert_one_line_error(write(tmp_path, data[:inside], "cut.gguf"), "truncated")
    # a length beyond the end of the file is not a reason to read it
    lying = bytearray(data)
    at = data.index(struct.pack("<Q", 200) + b"x")
    lying[at:at + 8] = struct.pack("<Q", 2**40)
    assert_one_line_error(write(tmp_path, bytes(lying), "lying.gguf"), "truncated")
