"""Generates the gRPC stubs of the `rookery` package from the repository's proto/ files.

The stubs are committed under src/rookery/v1/ so that `pip install ./clients/python` needs
no protoc; tests/test_stubs.py regenerates them into a temporary directory and fails when
they differ from what is committed. Run it after changing a .proto:

    python clients/python/tools/generate.py

protoc runs with `-I proto`, so a file's import path is `rookery/v1/…` and the generated
code imports its siblings as `from rookery.v1 import …`. Written into src/, the files land
in the `rookery.v1` subpackage of this very package, where those imports resolve as they
are: no rewriting of generated code.
"""

from __future__ import annotations

import sys
from pathlib import Path

# clients/python/tools/generate.py -> the repository root.
REPOSITORY = Path(__file__).resolve().parents[3]
PROTO_ROOT = REPOSITORY / "proto"
PACKAGE_SRC = Path(__file__).resolve().parents[1] / "src"
# The files protoc writes per .proto; __init__.py in the same folder is hand-written.
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def protos() -> list[Path]:
    """The .proto files of the rookery.v1 package, relative to proto/."""
    return sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / "rookery" / "v1").glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Runs grpcio-tools' protoc into `out_dir`; returns the files written, relative to it."""
    from grpc_tools import protoc  # a test/dev dependency only, not needed at run time

    out_dir.mkdir(parents=True, exist_ok=True)
    # grpc_tools ships Google's well-known types (duration.proto, timestamp.proto).
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p) for p in protos()),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return sorted(p.relative_to(out_dir) for p in out_dir.rglob("*") if p.name.endswith(SUFFIXES))


if __name__ == "__main__":
    written = generate(PACKAGE_SRC)
    print("\n".join(str(PACKAGE_SRC / p) for p in written), file=sys.stderr)
