"""Every family learns, in fp32 and in bf16, and bf16 learns what fp32 learns.

The problem is fixed and small: smooth colour ramps (``train_support.synthetic_loader``),
whose holes a model can fill from their borders but a flat fill cannot. After a fixed
budget every family must beat a flat mean-colour fill in the hole by a margin, its output
must follow the image (not one fill for all), and the bf16-autocast model's hole PSNR must
lie within 0.5 dB of the fp32 model's. These are what failed on an AMX CPU, where bf16
InP-Net filled every hole with one flat texture while a loss-falls test passed. Where the
CPU has no native bf16, autocast runs the same ops emulated: slower, same numerics.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from helpers.learning import train_and_score

MARGIN_DB = 2.0  # over the flat fill; about 4 dB is reached at this budget
PARITY_DB = 0.5  # |bf16 - fp32| hole PSNR
FAMILIES = ["inpnet_tiny", "mae_tiny", pytest.param("cmgan_tiny", marks=pytest.mark.slow)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], dict[str, float]]:
    """A getter of the scores of a (variant, precision) run, trained on first use."""
    cache: dict[tuple[str, str], dict[str, float]] = {}
    root = tmp_path_factory.mktemp("learning")

    def get(name: str, precision: str) -> dict[str, float]:
        if (name, precision) not in cache:
            cache[name, precision] = train_and_score(root / f"{name}-{precision}", name, precision)
        return cache[name, precision]

    return get


# CM-GAN's convolutions have no bf16 kernel on CPUs without AVX512: emulated, its bf16 run
# takes about 5 minutes on 2 cores (1 minute in fp32)
@pytest.mark.timeout(900)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_learns_to_fill_holes(trained, name: str, precision: str) -> None:
    s = trained(name, precision)
    assert s["model"] >= s["flat"] + MARGIN_DB, s  # beats a flat mean-colour fill in the hole
    assert s["corr"] >= 0.5, s  # the fill follows the image, not one colour for all


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", FAMILIES)
def test_bf16_learns_what_fp32_learns(trained, name: str) -> None:
    fp32, bf16 = trained(name, "fp32"), trained(name, "bf16")
    # the failure this guards against is bf16 learning less (InP-Net once stopped learning under
    # bf16); bf16 may learn more: on a native-bf16 Zen 5 the tiny CM-GAN (a GAN, 24 steps) scored
    # 25.82 dB in bf16 against 25.18 in fp32
    assert fp32["model"] - bf16["model"] <= PARITY_DB, (fp32, bf16)
