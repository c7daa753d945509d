"""Export a benchmark model to ONNX bytes the same way a user's model arrives."""

from __future__ import annotations

import io

OPSET = 17


def to_onnx(model, size: int, input_name: str = "image") -> bytes:
    import torch

    buffer = io.BytesIO()
    example = torch.rand(1, 3, size, size)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            buffer,
            input_names=[input_name],
            output_names=["score", "anomaly_map"],
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    return buffer.getvalue()
