"""LPIPS on tiny random backbones saved under the official key names (with torchvision's `classifier.*` extras) and
random positive lin heads, against a re-computation of the formula written here with F.conv2d on the saved tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from editor.eval.lpips import LpipsScorer, load_lpips, lpips_input
from editor.loading import CheckpointError, MissingWeightsError
from editor.metrics import to_tensor

FILES = {"alex": "alexnet-owt-7be5be79", "squeeze": "squeezenet1_1-b8a52dc0", "vgg": "vgg16-397923af"}
# torchvision `features` index -> (out channels, kernel) of each conv, with tiny widths
ALEX = {0: (4, 11), 3: (6, 5), 6: (8, 3), 8: (5, 3), 10: (5, 3)}
VGG = {
    i: (w, 3)
    for i, w in {0: 4, 2: 4, 5: 5, 7: 5, 10: 6, 12: 6, 14: 6, 17: 7, 19: 7, 21: 7, 24: 8, 26: 8, 28: 8}.items()
}
SQUEEZE_CONV0 = 4
FIRES = {
    3: (2, 3, 3),
    4: (2, 3, 3),
    6: (3, 4, 4),
    7: (3, 4, 4),
    9: (3, 5, 5),
    10: (3, 5, 5),
    11: (4, 6, 6),
    12: (4, 6, 6),
}
TAP_CHANNELS = {"alex": (4, 6, 8, 5, 5), "squeeze": (4, 6, 8, 10, 10, 12, 12), "vgg": (4, 5, 6, 7, 8)}


def _conv(gen: torch.Generator, state: dict, key: str, cin: int, cout: int, kernel: int) -> None:
    std = (2 / (cin * kernel * kernel)) ** 0.5
    state[f"{key}.weight"] = torch.randn(cout, cin, kernel, kernel, generator=gen) * std
    state[f"{key}.bias"] = torch.rand(cout, generator=gen) * 0.2


def tiny_states(seed: int = 0) -> dict[str, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """net -> (backbone state with classifier extras, lin state), random, with the official key names."""
    gen = torch.Generator().manual_seed(seed)
    states = {}
    for net in FILES:
        backbone: dict[str, torch.Tensor] = {}
        if net == "squeeze":
            _conv(gen, backbone, "features.0", 3, SQUEEZE_CONV0, 3)
            cin = SQUEEZE_CONV0
            for index, (squeeze, e1, e3) in FIRES.items():
                _conv(gen, backbone, f"features.{index}.squeeze", cin, squeeze, 1)
                _conv(gen, backbone, f"features.{index}.expand1x1", squeeze, e1, 1)
                _conv(gen, backbone, f"features.{index}.expand3x3", squeeze, e3, 3)
                cin = e1 + e3
            backbone |= {"classifier.1.weight": torch.randn(7, cin, 1, 1), "classifier.1.bias": torch.randn(7)}
        else:
            cin = 3
            for index, (cout, kernel) in (ALEX if net == "alex" else VGG).items():
                _conv(gen, backbone, f"features.{index}", cin, cout, kernel)
                cin = cout
            backbone |= {"classifier.1.weight": torch.randn(7, 9), "classifier.6.bias": torch.randn(7)}
        lins = {
            f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen) + 0.1
            for k, c in enumerate(TAP_CHANNELS[net])
        }
        states[net] = (backbone, lins)
    return states


def write_tiny_lpips(folder: Path, seed: int = 0) -> dict:
    """The official layout (`<backbone>.pth`, `v0.1/<net>.pth`) with tiny random weights; returns the states."""
    states = tiny_states(seed)
    (folder / "v0.1").mkdir(parents=True, exist_ok=True)
    for net, (backbone, lins) in states.items():
        torch.save(backbone, folder / f"{FILES[net]}.pth")
        torch.save(lins, folder / "v0.1" / f"{net}.pth")
    return states


# ---- the formula, written out --------------------------------------------------------------------------------------


def _relu_conv(sd: dict, key: str, x: torch.Tensor, stride: int = 1, padding: int = 0) -> torch.Tensor:
    return F.relu(F.conv2d(x, sd[f"features.{key}.weight"], sd[f"features.{key}.bias"], stride, padding))


def _fire(sd: dict, index: int, x: torch.Tensor) -> torch.Tensor:
    s = _relu_conv(sd, f"{index}.squeeze", x)
    return torch.cat([_relu_conv(sd, f"{index}.expand1x1", s), _relu_conv(sd, f"{index}.expand3x3", s, padding=1)], 1)


def _alex_taps(sd: dict, x: torch.Tensor) -> list[torch.Tensor]:
    t1 = _relu_conv(sd, "0", x, 4, 2)
    t2 = _relu_conv(sd, "3", F.max_pool2d(t1, 3, 2), padding=2)
    t3 = _relu_conv(sd, "6", F.max_pool2d(t2, 3, 2), padding=1)
    t4 = _relu_conv(sd, "8", t3, padding=1)
    return [t1, t2, t3, t4, _relu_conv(sd, "10", t4, padding=1)]


def _squeeze_taps(sd: dict, x: torch.Tensor) -> list[torch.Tensor]:
    def pool(t):
        return F.max_pool2d(t, 3, 2, ceil_mode=True)

    t1 = _relu_conv(sd, "0", x, 2)
    t2 = _fire(sd, 4, _fire(sd, 3, pool(t1)))
    t3 = _fire(sd, 7, _fire(sd, 6, pool(t2)))
    t4 = _fire(sd, 9, pool(t3))
    t5 = _fire(sd, 10, t4)
    t6 = _fire(sd, 11, t5)
    return [t1, t2, t3, t4, t5, t6, _fire(sd, 12, t6)]


def _vgg_taps(sd: dict, x: torch.Tensor) -> list[torch.Tensor]:
    taps = []
    for block in ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28)):
        x = F.max_pool2d(x, 2, 2) if taps else x
        for index in block:
            x = _relu_conv(sd, str(index), x, padding=1)
        taps.append(x)
    return taps


def reference(net: str, states: dict, x0: torch.Tensor, x1: torch.Tensor) -> float:
    """LPIPS v0.1 in float64 from the saved tensors: scaling layer, taps, unit-normalise, squared difference, lin
    conv, spatial mean, sum over taps."""
    backbone, lins = ({k: v.double() for k, v in sd.items()} for sd in states[net])
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)
    taps = {"alex": _alex_taps, "squeeze": _squeeze_taps, "vgg": _vgg_taps}[net]
    total = 0.0
    feats0, feats1 = taps(backbone, (x0 - shift) / scale), taps(backbone, (x1 - shift) / scale)
    for k, (f0, f1) in enumerate(zip(feats0, feats1, strict=True)):
        n0 = f0 / (torch.sqrt((f0**2).sum(dim=1, keepdim=True)) + 1e-10)
        n1 = f1 / (torch.sqrt((f1**2).sum(dim=1, keepdim=True)) + 1e-10)
        total += float(F.conv2d((n0 - n1) ** 2, lins[f"lin{k}.model.1.weight"]).mean())
    return total


def _pixels(image: Image.Image) -> torch.Tensor:
    """1 x 3 x H x W float64 in [-1, 1], computed here without the module's helper."""
    return torch.from_numpy(np.asarray(image, np.float64) / 127.5 - 1).permute(2, 0, 1)[None]


# ---- tests -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("lpips")
    return root, write_tiny_lpips(root)


SIZE = (62, 50)  # odd enough that SqueezeNet's ceil_mode pools round up: (30 - 3) / 2 -> 15 rows, not 14


def _noise(seed: int, size: tuple[int, int] = SIZE) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("net", ["alex", "squeeze", "vgg"])
def test_lpips_matches_the_formula_written_out(folder, net):
    root, states = folder
    scorer = LpipsScorer(root, net)
    a, b = _noise(1), _noise(2)
    expected = reference(net, states, _pixels(a), _pixels(b))
    assert expected > 1e-3  # a real distance, not a degenerate zero
    assert scorer.distance(a, b) == pytest.approx(expected, rel=1e-5)
    assert LpipsScorer(root, net, dtype=torch.float64).distance(a, b) == pytest.approx(expected, rel=1e-12)
    assert scorer.distance(a, a) == 0.0
    assert scorer.distance(b, a) == scorer.distance(a, b)
    assert not scorer.model.training and not any(p.requires_grad for p in scorer.model.parameters())


def test_inputs_are_scaled_to_minus_one_one(folder):
    root, states = folder
    scorer = LpipsScorer(root, "alex")
    white, black = Image.new("RGB", (4, 4), (255,) * 3), Image.new("RGB", (4, 4))
    assert lpips_input(white).unique().tolist() == [1.0] and lpips_input(black).unique().tolist() == [-1.0]
    a, b = _noise(3), _noise(4)
    unscaled = scorer.score(to_tensor(a)[None], to_tensor(b)[None])  # [0, 1] fed as if it were [-1, 1]
    assert unscaled == pytest.approx(reference("alex", states, to_tensor(a)[None], to_tensor(b)[None]), rel=1e-5)
    assert abs(scorer.distance(a, b) - unscaled) > 1e-3 * scorer.distance(a, b)


def test_background_distance_is_the_distance_of_the_weighted_images(folder):
    root, _ = folder
    scorer = LpipsScorer(root, "squeeze")
    source, edit = _noise(5), _noise(6)
    inside = np.zeros(SIZE[::-1], bool)
    inside[10:30, 20:50] = True
    mask = Image.fromarray(np.where(inside, 255, 0).astype(np.uint8))
    blacked = [Image.fromarray(np.where(inside[..., None], 0, np.asarray(im))) for im in (source, edit)]
    assert scorer.background_distance(source, edit, mask) == scorer.distance(*blacked)
    assert scorer.background_distance(source, edit, mask) != scorer.distance(source, edit)
    soft = Image.fromarray(np.random.default_rng(7).integers(0, 256, SIZE[::-1], dtype=np.uint8))
    w = torch.from_numpy(1 - np.asarray(soft, np.float64) / 255)
    by_hand = scorer.score(2 * to_tensor(source)[None] * w - 1, 2 * to_tensor(edit)[None] * w - 1)
    assert scorer.background_distance(source, edit, soft) == pytest.approx(by_hand, rel=1e-12)
    white = Image.new("L", SIZE, 255)
    assert scorer.background_distance(source, edit, white) == 0.0  # everything masked: both all black
    assert scorer.background_distance(source, edit, Image.new("L", SIZE)) == scorer.distance(source, edit)
    with pytest.raises(ValueError, match="differ in size"):
        scorer.distance(source, _noise(8, (50, 62)))
    with pytest.raises(ValueError, match="source and mask differ"):
        scorer.background_distance(source, edit, Image.new("L", (8, 8)))


def _broken(tmp_path: Path, net: str, change) -> Path:
    root = tmp_path / "lpips"
    states = write_tiny_lpips(root)
    backbone, lins = states[net]
    change(backbone, lins)
    torch.save(backbone, root / f"{FILES[net]}.pth")
    torch.save(lins, root / "v0.1" / f"{net}.pth")
    return root


@pytest.mark.parametrize(
    ("net", "change", "expected"),
    [
        (
            "alex",
            lambda b, lin: b.pop("features.3.weight"),
            r"alexnet-owt-7be5be79\.pth lacks the key 'features.3.weight",
        ),
        (
            "vgg",
            lambda b, lin: b.pop("features.28.bias"),
            r"vgg16-397923af\.pth lacks 1 expected key.*features.28.bias",
        ),
        ("squeeze", lambda b, lin: b.pop("features.9.expand3x3.weight"), "features.9.expand3x3.weight"),
        ("alex", lambda b, lin: b.update({"features.1.weight": torch.ones(1)}), "does not use: features.1.weight"),
        (
            "alex",
            lambda b, lin: b.update({"features.0.weight": torch.ones(4, 3, 5, 5)}),
            r"features.0.weight.*\(4, 3, 11",
        ),
        ("squeeze", lambda b, lin: lin.update({"lin6.model.1.weight": torch.ones(1, 5, 1, 1)}), r"squeeze\.pth: key"),
        ("vgg", lambda b, lin: lin.pop("lin4.model.1.weight"), r"v0.1/vgg\.pth lacks 1 expected key.*lin4"),
        ("alex", lambda b, lin: lin.update({"lin5.model.1.weight": torch.ones(1, 5, 1, 1)}), "does not use: lin5"),
    ],
)
def test_strict_loading_names_the_file_and_key(tmp_path, net, change, expected):
    root = _broken(tmp_path, net, change)
    with pytest.raises(CheckpointError, match=expected) as err:
        load_lpips(root, net)
    assert "python -m editor.weights download eval-metrics" in str(err.value)


def test_missing_files_and_names(tmp_path):
    write_tiny_lpips(tmp_path)
    (tmp_path / "v0.1" / "squeeze.pth").unlink()
    with pytest.raises(MissingWeightsError, match=r"LPIPS squeeze lin weights not found: .*v0.1/squeeze\.pth"):
        load_lpips(tmp_path, "squeeze")
    (tmp_path / "vgg16-397923af.pth").unlink()
    with pytest.raises(MissingWeightsError, match="vgg16-397923af.pth(.|\n)*download eval-metrics"):
        LpipsScorer(tmp_path, "vgg")
    with pytest.raises(MissingWeightsError, match="LPIPS folder not found"):
        load_lpips(tmp_path / "absent")
    with pytest.raises(ValueError, match="unknown LPIPS net 'resnet'"):
        load_lpips(tmp_path, "resnet")  # type: ignore[arg-type]
    assert load_lpips(tmp_path, "alex") is not None  # the other nets need only their own two files


def test_a_safetensors_twin_is_read_instead_of_the_pickle(folder, tmp_path):
    root, states = folder
    backbone, lins = states["alex"]
    save_file({k: v.contiguous() for k, v in backbone.items()}, tmp_path / f"{FILES['alex']}.safetensors")
    (tmp_path / f"{FILES['alex']}.pth").write_bytes(b"not a checkpoint")  # would fail if read
    (tmp_path / "v0.1").mkdir()
    torch.save(lins, tmp_path / "v0.1" / "alex.pth")
    a, b = _noise(9), _noise(10)
    assert LpipsScorer(tmp_path).distance(a, b) == LpipsScorer(root).distance(a, b)
