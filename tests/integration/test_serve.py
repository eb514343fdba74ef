"""REST serving: `mlflow models serve -m models:/NAME@champion` answers base64 PNG requests.

The server runs in the local environment (``--env-manager local``) on 127.0.0.1 and a free
port; the test stops it (its whole process group). It loads the model in a fresh process,
so it needs the real ``inpnet.models.build``.
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
from helpers.registry import (
    as_records,
    decode_b64_png,
    ensure_build_model,
    image_and_mask,
    make_checkpoint,
    mlflow_process,
    png_b64,
    real_build_available,
    write_metrics,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not real_build_available(), reason="inpnet.models.build is not there yet"),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """One champion in the session store and `mlflow models serve` on it."""
    from inpnet.registry.register import register
    from inpnet.registry.store import CHAMPION, client

    ensure_build_model()
    root = tmp_path_factory.mktemp("serve")
    uri, name = os.environ["MLFLOW_TRACKING_URI"], f"inpnet-serve-{uuid.uuid4().hex[:8]}"
    ckpt = make_checkpoint(root / "ckpt")
    reg = register(
        ckpt, write_metrics(root / "metrics.json", 20.0, {"center": 20.0}, checkpoint=ckpt), tracking_uri=uri, name=name
    )
    client(uri).set_registered_model_alias(name, CHAMPION, reg.version)
    args = ["models", "serve", "-m", f"models:/{name}@{CHAMPION}", "--env-manager", "local"]
    with mlflow_process(
        args, root, tmp_path_factory, health="/ping", env={"MLFLOW_TRACKING_URI": uri}, timeout=240
    ) as url:
        yield url


def test_rest_server_inpaints_and_rejects_bad_input(served: str) -> None:
    import requests

    image, hole = image_and_mask(45, 61)
    mask = np.where(hole, 255, 0).astype(np.uint8)
    reply = requests.post(
        f"{served}/invocations", json=as_records(image=[png_b64(image)], mask=[png_b64(mask)]), timeout=60
    )
    assert reply.status_code == 200, reply.text
    result = decode_b64_png(reply.json()["predictions"][0]["image"])
    assert result.shape == image.shape and np.array_equal(result[~hole], image[~hole])

    inverted = as_records(image=[png_b64(image)], mask=[png_b64(255 - mask)])
    again = requests.post(f"{served}/invocations", json={**inverted, "params": {"invert_mask": True}}, timeout=60)
    assert again.status_code == 200 and np.array_equal(decode_b64_png(again.json()["predictions"][0]["image"]), result)

    bad = requests.post(
        f"{served}/invocations", json=as_records(image=[png_b64(image)], mask=[png_b64(mask[:9])]), timeout=60
    )
    assert bad.status_code == 400 and "must match" in bad.text
