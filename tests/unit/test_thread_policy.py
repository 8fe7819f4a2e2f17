"""Worker threads that wait do not spin: the backbone, the kNN search and the screen share a
few cores, and spinning threads took them from each other (magnetic_tile, 2 cores: 87 ms a part
with ONNX Runtime's and OpenMP's spinning, 45 ms without)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from onnx import TensorProto, helper

from station.model.search import GraphIndex
from station.runtime.onnx_runtime import ALLOW_SPINNING, OnnxRuntime


def _identity_model() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_onnx_runtime_sessions_do_not_spin() -> None:
    rt = OnnxRuntime(_identity_model(), threads=2)
    opts = rt.session.get_session_options()
    assert opts.get_session_config_entry(ALLOW_SPINNING) == "0"
    assert rt.features(np.ones((1, 4), np.float32)).tolist() == [[1, 1, 1, 1]]
    index = GraphIndex(np.eye(8, dtype=np.float32))
    assert index._session.get_session_options().get_session_config_entry(ALLOW_SPINNING) == "0"


def _policy(env: dict[str, str]) -> str:
    code = "import os, station; print(os.environ.get('OMP_WAIT_POLICY'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return out.stdout.strip()


def test_openmp_threads_wait_passively_unless_the_user_says_otherwise() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy(env) == "PASSIVE"
    assert _policy({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
