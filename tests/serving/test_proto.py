"""The checked-in generated code is exactly what grpc_tools makes of the .proto today."""

import subprocess
import sys
from pathlib import Path

PROTO = Path(__file__).resolve().parents[2] / "proto"
GENERATED = ("mediround_pb2.py", "mediround_pb2.pyi", "mediround_pb2_grpc.py")


def test_generated_code_matches_the_proto(tmp_path):
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}", f"--python_out={tmp_path}",
                    f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}", "mediround/v1/mediround.proto"],
                   check=True, cwd=PROTO)
    for name in GENERATED:
        fresh = (tmp_path / "mediround" / "v1" / name).read_text()
        assert fresh == (PROTO / "mediround" / "v1" / name).read_text(), f"{name} is stale: run `make proto`"
