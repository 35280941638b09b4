"""The committed stubs in src/rookery/v1 are exactly what grpcio-tools makes of proto/ now:
a .proto changed without regenerating (tools/generate.py) fails here."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / "tools" / "generate.py"
COMMITTED = Path(__file__).resolve().parents[1] / "src"


def load_generator():
    spec = importlib.util.spec_from_file_location("generate", TOOLS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_the_protos() -> None:
    generator = load_generator()
    with tempfile.TemporaryDirectory() as out:
        fresh = generator.generate(Path(out))
        # Every .proto gives its three files, and nothing else is generated.
        assert len(fresh) == 3 * len(generator.protos()) > 0
        committed = sorted(
            p.relative_to(COMMITTED)
            for p in (COMMITTED / "rookery" / "v1").iterdir()
            if p.name.endswith(generator.SUFFIXES)
        )
        assert committed == fresh, "stub files differ from the protos: run clients/python/tools/generate.py"
        for relative in fresh:
            assert (Path(out) / relative).read_bytes() == (COMMITTED / relative).read_bytes(), (
                f"{relative} drifted from proto/: run clients/python/tools/generate.py"
            )


def test_the_stubs_import_inside_the_package() -> None:
    # grpcio-tools writes `from rookery.v1 import cache_pb2`; it resolves to this package.
    from rookery.v1 import cache_pb2, cache_pb2_grpc

    assert cache_pb2_grpc.CacheStub is not None
    assert cache_pb2.DESCRIPTOR.package == "rookery.v1"
