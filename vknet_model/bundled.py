"""The model shipped inside the package, used by every command when ``--model`` is omitted.

It is the ``tiny`` config trained by this project's own ``vknet train`` on synthetic KITTI-STEP (see
``assets/README.md`` for the exact commands and its held-out scores). It is for demos and tests of the
whole chain on a machine with nothing downloaded; real footage needs a model trained on real data.
"""

from __future__ import annotations

import logging
from pathlib import Path

_LOG = logging.getLogger(__name__)
BUNDLED_MODEL = Path(__file__).resolve().parent / "assets" / "tiny_synth.pt"
# The same weights exported (with tiny_synth.json beside it): the node runs it on ONNX Runtime / TensorRT.
BUNDLED_ONNX = BUNDLED_MODEL.with_suffix(".onnx")


def resolve_model(model: str | Path | None, *, prefer_onnx: bool = False, backend: str = "auto") -> Path:
    """``model`` if given, else the bundled model in the form ``backend`` runs (the checkpoint for torch, the
    ONNX export for ONNX Runtime and TensorRT; for "auto" the export with ``prefer_onnx``); a clear error if
    the file is not there."""
    if model is not None:
        path = Path(model)
        if not path.exists():
            raise FileNotFoundError(f"model file not found: {path}")
        return path
    if not BUNDLED_MODEL.is_file():
        raise FileNotFoundError(f"the bundled model {BUNDLED_MODEL} is missing from this installation; "
                                f"pass --model (a .pt checkpoint or an exported .onnx)")
    from vknet_model.backends import ONNX_BACKENDS

    onnx = backend in ONNX_BACKENDS or (backend == "auto" and prefer_onnx)
    if onnx and not BUNDLED_ONNX.is_file():
        raise FileNotFoundError(f"the bundled model's ONNX export {BUNDLED_ONNX} is missing from this installation")
    chosen = BUNDLED_ONNX if onnx else BUNDLED_MODEL
    _LOG.info("using the bundled model %s (tiny, trained on synthetic data)", chosen)
    return chosen
