"""The MLflow models-from-code file: how a registered inpnet model answers ``predict``.

MLflow copies this file into every logged model and executes it at load time (see
``mlflow.pyfunc.log_model(python_model=<this file>)``); the last line hands the model object
to MLflow with ``mlflow.models.set_model``. Imported as ``inpnet.registry.pyfunc_model`` it
only defines the class, so importing inpnet stays free of side effects.

Payload (one row per image), as a DataFrame or ``{"dataframe_records": [...]}`` over REST:

* ``image``: base64 of an encoded image (PNG, JPEG, ...), any size;
* ``mask``: base64 of an 8-bit mask image of the same size, 255 = hole; empty or missing
  means whole-image restoration (InP-Net only).

Output: a DataFrame with one column ``image``, base64 PNG of the composite (known pixels are
those of the input, byte for byte). Params: ``invert_mask`` (bool, 0 = hole).
Bad input (corrupt image, mask of another size, all-hole mask) is answered with an
``MlflowException`` of code ``INVALID_PARAMETER_VALUE`` (HTTP 400 from the scoring server).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel


class InpaintPyfunc(PythonModel):
    """Pyfunc wrapper: weights and config come from the model's artifacts."""

    def load_context(self, context: Any) -> None:
        from inpnet.inpaint import inpainter_from_files

        config = dict(context.model_config or {})
        device = config.get("device", "auto")
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.inpainter, self.info = inpainter_from_files(
            context.artifacts["weights"], context.artifacts["config"], device=device
        )

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from inpnet.errors import InpnetError
        from inpnet.images import decode_image, decode_mask, encode_png
        from inpnet.inpaint import inpaint_image

        invert = bool((params or {}).get("invert_mask", False))
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "image" not in frame.columns:
            raise MlflowException(
                f"input needs an 'image' column (base64 PNG), got {list(frame.columns)}", INVALID_PARAMETER_VALUE
            )
        outputs = []
        for row, record in enumerate(frame.to_dict("records")):
            try:
                image = decode_image(_b64(record["image"], f"row {row} image"), source=f"row {row} image")
                mask_b64 = record.get("mask")
                mask = None
                if isinstance(mask_b64, str) and mask_b64:
                    mask = decode_mask(_b64(mask_b64, f"row {row} mask"), source=f"row {row} mask", invert=invert)
                result = inpaint_image(self.inpainter, image, mask, device=self.device)
            except InpnetError as err:
                raise MlflowException(str(err), INVALID_PARAMETER_VALUE) from None
            outputs.append(base64.b64encode(encode_png(result)).decode("ascii"))
        return pd.DataFrame({"image": outputs})


def _b64(text: Any, what: str) -> bytes:
    from inpnet.errors import DataError

    if not isinstance(text, str):
        raise DataError(f"{what}: expected a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise DataError(f"{what}: not valid base64 ({err})") from None


if __name__ != "inpnet.registry.pyfunc_model":  # executed by MLflow as models-from-code
    mlflow.models.set_model(InpaintPyfunc())
