"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"), version 0.1
with the linear calibration, written in plain torch because torchvision (which the `lpips` package and torchmetrics
build on) cannot be installed beside this project's torch.

Definition (the lpips package's `LPIPS(net=..., version="0.1", lpips=True, spatial=False)`, `normalize=False`)
  x in [-1, 1], N x 3 x H x W  ->  s = (x − shift) / scale, shift = (−.030, −.088, −.188), scale = (.458, .448, .450)
  f_k(s)       the ReLU outputs at the tap ends of the backbone's `features` (below)
  u_k          f_k / (sqrt(Σ_channels f_k²) + 1e-10)
  d(x0, x1)    = Σ_k mean_{h,w} conv1x1_k((u_k(x0) − u_k(x1))²), conv1x1_k: C_k -> 1, no bias (the "lin" heads)
  Pixels come in as [0, 1] (`to_tensor`) and go to 2·p − 1, which is the package's `im2tensor` (p·255 / 127.5 − 1).

Backbones: torchvision's `features` layers (kernel sizes, strides, paddings, pools and ceil_mode as torchvision
defines them), with every channel width read from the state dict, and the taps as the package slices them:
  alex     AlexNet            taps [0:2] [2:5] [5:8] [8:10] [10:12]
  squeeze  SqueezeNet 1.1     taps [0:2] [2:5] [5:8] [8:10] [10:11] [11:12] [12:13] (Fire modules at 3, 4, 6, 7, 9-12)
  vgg      VGG16              taps [0:4] [4:9] [9:16] [16:23] [23:30]
Layers after the last tap (AlexNet's and VGG's final max-pool) and the classifiers are not built.

Weights: one folder (`weights/lpips/`, what `python -m editor.weights download eval-metrics` fills), laid out as
    alexnet-owt-7be5be79.pth       https://download.pytorch.org/models/alexnet-owt-7be5be79.pth       (BSD-3-Clause)
    squeezenet1_1-b8a52dc0.pth     https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth     (BSD-3-Clause)
    vgg16-397923af.pth             https://download.pytorch.org/models/vgg16-397923af.pth             (BSD-3-Clause)
    v0.1/alex.pth, v0.1/squeeze.pth, v0.1/vgg.pth
        https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/<net>.pth
        (BSD-2-Clause; the `lpips` wheel carries files of these names under lpips/weights/v0.1/)
Each net needs only its two files. The backbones are torchvision's own files (the ones torch.hub caches under
~/.cache/torch/hub/checkpoints/, which can be copied here); their names end in the first 8 hex digits of their
SHA-256, which the downloader checks. A `.safetensors` twin (as `python -m editor.weights convert` writes) is read
instead of the `.pth` when present. Loading is strict: backbone keys `features.<i>.weight/bias` (Fire modules:
`features.<i>.{squeeze,expand1x1,expand3x3}.weight/bias`), `classifier.*` ignored, nothing else allowed; lin keys
exactly `lin<k>.model.1.weight` (k over the taps; `model.0` is the package's Dropout, which has no weights).

Background LPIPS (Reason-Edit, TencentARC/SmartEdit test/metrics_evaluation.py `calculate_lpips`): both images
multiplied by `editor.eval.metrics.background_weights(mask)` (w = 1 − mask/255 on 3 channels) in [0, 1], then mapped to
[-1, 1] and scored; Reason-Edit uses net_type='squeeze' through torchmetrics. The default net here is 'alex', the
lpips package's default, for the plain LPIPS that MGIE reports on MA5k.

Deviations
- Own implementation instead of the lpips package / torchmetrics (torchvision is not installable here). The suite
  checks it against a re-computation of the formula on tiny random backbones. Once, outside the suite, it was
  compared with lpips 0.1.4 on torchvision 0.29.1 (imported with its compiled ops stubbed out): full-size random
  torchvision backbones saved as torchvision saves them, the package's real v0.1 lin files, 2 pairs of 64 x 80
  inputs: identical float32 values for all three nets.
- Float32 by default, like the package; the mask weighting is done in float64 before the cast (Reason-Edit: float32).
- Only version 0.1, lpips=True, spatial=False; no batching of pairs in `LpipsScorer` (one pair per call).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from editor.eval.metrics import background_weights, check_sizes
from editor.metrics import to_tensor

Net = Literal["alex", "squeeze", "vgg"]
NETS: tuple[Net, ...] = ("alex", "squeeze", "vgg")
SHIFT, SCALE = (-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)
EPS = 1e-10
LIN_DIR = "v0.1"
GET_LPIPS = (
    "`python -m editor.weights download eval-metrics` (torchvision's backbones from download.pytorch.org and the lpips "
    "package's v0.1 lin files), or copy the files by hand into the LPIPS folder; editor/eval/lpips.py gives the layout"
)


@dataclass(frozen=True)
class Conv:
    kernel: int
    stride: int = 1
    padding: int = 0


@dataclass(frozen=True)
class Pool:
    kernel: int
    stride: int
    ceil_mode: bool = False


RELU, FIRE = "relu", "fire"  # layers without a size of their own; a Fire module's widths come from its convs
Layer = Conv | Pool | str


@dataclass(frozen=True)
class Recipe:
    """One torchvision `features` stack up to its last LPIPS tap: layers by index, the slice ends, the file's stem."""

    layers: tuple[Layer, ...]
    taps: tuple[int, ...]  # tap k is the output of features[taps[k-1]:taps[k]]
    backbone: str  # file stem under the folder (.pth, or a .safetensors twin)


def _vgg16() -> tuple[Layer, ...]:
    """torchvision cfg "D": blocks of 2, 2, 3, 3, 3 3x3 convs (padding 1) + ReLU, 2x2 max-pools between them."""
    layers: list[Layer] = []
    for block, convs in enumerate((2, 2, 3, 3, 3)):
        if block:
            layers.append(Pool(2, 2))
        layers += [Conv(3, padding=1), RELU] * convs
    return tuple(layers)


_SQUEEZE_POOL = Pool(3, 2, ceil_mode=True)
RECIPES: dict[str, Recipe] = {
    "alex": Recipe(
        (Conv(11, 4, 2), RELU, Pool(3, 2), Conv(5, padding=2), RELU, Pool(3, 2)) + (Conv(3, padding=1), RELU) * 3,
        (2, 5, 8, 10, 12),
        "alexnet-owt-7be5be79",
    ),
    "squeeze": Recipe(
        (Conv(3, 2), RELU, _SQUEEZE_POOL, FIRE, FIRE, _SQUEEZE_POOL, FIRE, FIRE, _SQUEEZE_POOL) + (FIRE,) * 4,
        (2, 5, 8, 10, 11, 12, 13),
        "squeezenet1_1-b8a52dc0",
    ),
    "vgg": Recipe(_vgg16(), (4, 9, 16, 23, 30), "vgg16-397923af"),
}


class Fire(nn.Module):
    """SqueezeNet's Fire module: 1x1 squeeze, then 1x1 and 3x3 (padding 1) expands, each followed by a ReLU, concat."""

    PARTS = ("squeeze", "expand1x1", "expand3x3")

    def __init__(self, channels: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(channels, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], 1)


class LinHead(nn.Module):
    """The package's NetLinLayer: `model.0` Dropout (identity in eval), `model.1` 1x1 conv C -> 1 without bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + EPS)


class Lpips(nn.Module):
    """LPIPS v0.1: `forward(x0, x1)` on N x 3 x H x W in [-1, 1] -> N distances. State dict keys are the official
    ones: `features.*` (torchvision's backbone file) and `lin<k>.model.1.weight` (the lpips package's file)."""

    def __init__(self, recipe: Recipe, widths: Mapping[int, tuple[int, ...]]) -> None:
        super().__init__()
        self.taps = recipe.taps
        layers: list[nn.Module] = []
        channels, tap_channels = 3, []
        for index, spec in enumerate(recipe.layers):
            if isinstance(spec, Conv):
                (out,) = widths[index]
                layers.append(nn.Conv2d(channels, out, spec.kernel, spec.stride, spec.padding))
                channels = out
            elif isinstance(spec, Pool):
                layers.append(nn.MaxPool2d(spec.kernel, spec.stride, ceil_mode=spec.ceil_mode))
            elif spec == FIRE:
                squeeze, expand1x1, expand3x3 = widths[index]
                layers.append(Fire(channels, squeeze, expand1x1, expand3x3))
                channels = expand1x1 + expand3x3
            else:
                layers.append(nn.ReLU())
            if index + 1 in recipe.taps:
                tap_channels.append(channels)
        self.features = nn.Sequential(*layers)
        for k, tap in enumerate(tap_channels):
            self.add_module(f"lin{k}", LinHead(tap))

    def tap_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's outputs at the tap ends, for input already through the scaling layer."""
        outs, start = [], 0
        for end in self.taps:
            for layer in self.features[start:end]:
                x = layer(x)
            outs.append(x)
            start = end
        return outs

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        shift = torch.tensor(SHIFT, device=x0.device, dtype=x0.dtype)[None, :, None, None]
        scale = torch.tensor(SCALE, device=x0.device, dtype=x0.dtype)[None, :, None, None]
        f0, f1 = self.tap_features((x0 - shift) / scale), self.tap_features((x1 - shift) / scale)
        total = torch.zeros(x0.shape[0], device=x0.device, dtype=x0.dtype)
        for k, (a, b) in enumerate(zip(f0, f1, strict=True)):
            total = total + self.get_submodule(f"lin{k}")((_unit(a) - _unit(b)) ** 2).mean(dim=(2, 3))[:, 0]
        return total


# ---------------------------------------------------------------------------------------------------------- loading


def _file(folder: Path, stem: str) -> Path:
    """`<stem>.safetensors` when present (a converted copy), else `<stem>.pth`."""
    converted = folder / f"{stem}.safetensors"
    return converted if converted.is_file() else folder / f"{stem}.pth"


def backbone_widths(recipe: Recipe, state: Mapping[str, torch.Tensor], source: str) -> dict[int, tuple[int, ...]]:
    """Output channels of each conv (a Fire module: squeeze, expand1x1, expand3x3), read from the state dict."""
    from editor.loading import CheckpointError

    def out_channels(key: str) -> int:
        if key not in state:
            raise CheckpointError(f"{source} lacks the key {key!r} of the {recipe.backbone} backbone. {GET_LPIPS}")
        return int(state[key].shape[0])

    widths = {}
    for index, spec in enumerate(recipe.layers):
        if isinstance(spec, Conv):
            widths[index] = (out_channels(f"features.{index}.weight"),)
        elif spec == FIRE:
            widths[index] = tuple(out_channels(f"features.{index}.{part}.weight") for part in Fire.PARTS)
    return widths


def load_lpips(
    folder: Path | str, net: Net = "alex", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Lpips:
    """Build LPIPS for `net` from the backbone and lin files in `folder` (layout in the module docstring), strictly:
    a missing file raises MissingWeightsError; a missing, unexpected (other than `classifier.*`) or misshapen key
    raises CheckpointError naming the file and the key. Returns the module in eval mode, frozen, on `device`."""
    from editor.loading import check_keys, read_state_dict, require

    if net not in RECIPES:
        raise ValueError(f"unknown LPIPS net {net!r}; choose one of {', '.join(NETS)}")
    recipe, folder = RECIPES[net], Path(folder)
    require(folder, "LPIPS folder", GET_LPIPS)
    backbone_path, lin_path = _file(folder, recipe.backbone), _file(folder / LIN_DIR, net)
    require(backbone_path, f"LPIPS {net} backbone", GET_LPIPS)
    require(lin_path, f"LPIPS {net} lin weights", GET_LPIPS)
    backbone = {k: v for k, v in read_state_dict(backbone_path, GET_LPIPS).items() if not k.startswith("classifier.")}
    lins = read_state_dict(lin_path, GET_LPIPS)
    with torch.device("meta"):
        model = Lpips(recipe, backbone_widths(recipe, backbone, str(backbone_path)))
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    check_keys({k: s for k, s in shapes.items() if k.startswith("features.")}, backbone, str(backbone_path), GET_LPIPS)
    check_keys({k: s for k, s in shapes.items() if k.startswith("lin")}, lins, str(lin_path), GET_LPIPS)
    model.load_state_dict({k: v.to(dtype) for k, v in (backbone | lins).items()}, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------- scoring


def lpips_input(pixels: Image.Image | torch.Tensor) -> torch.Tensor:
    """An RGB image (or a 3 x H x W tensor in [0, 1]) -> 1 x 3 x H x W float64 in [-1, 1] (2·p − 1)."""
    tensor = to_tensor(pixels) if isinstance(pixels, Image.Image) else pixels
    return (2 * tensor - 1)[None]


@dataclass(frozen=True)
class LpipsScorer:
    """LPIPS distances with one net loaded once from `folder` (layout in the module docstring); lower is closer."""

    folder: Path | str
    net: Net = "alex"
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    model: Lpips = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", load_lpips(self.folder, self.net, self.device, self.dtype))

    @torch.inference_mode()
    def score(self, x0: torch.Tensor, x1: torch.Tensor) -> float:
        """LPIPS of two 1 x 3 x H x W tensors already in [-1, 1]."""
        return float(self.model(x0.to(self.device, self.dtype), x1.to(self.device, self.dtype))[0])

    def distance(self, a: Image.Image, b: Image.Image) -> float:
        """LPIPS between two RGB images of one size (ValueError otherwise)."""
        check_sizes(a=a, b=b)
        return self.score(lpips_input(a), lpips_input(b))

    def background_distance(self, source: Image.Image, edit: Image.Image, mask: Image.Image) -> float:
        """Reason-Edit's background LPIPS: source and edit both weighted by `background_weights(mask)` in [0, 1],
        then scored. Give it the 256 x 256 images of `editor.eval.metrics.reason_edit_resize` to match the paper."""
        check_sizes(source=source, edit=edit, mask=mask)
        weights = background_weights(mask)
        return self.score(lpips_input(to_tensor(source) * weights), lpips_input(to_tensor(edit) * weights))
