"""Evaluation metrics for instruction-based editing, as Reason-Edit (SmartEdit) and MagicBrush define them.

Images are RGB PIL images; pixels are scaled to [0, 1] by `editor.metrics.to_tensor`, and all arithmetic is float64.

Pixel metrics
- Reason-Edit background preservation (TencentARC/SmartEdit test/metrics_evaluation.py; docs/smartedit.md §5.1).
  Weight map w = 1 − mask/255 from the grey mask as read (not binarised: its JPEG masks have soft edges), the same
  on all 3 channels, multiplied into both the source x and the edit y; then, on the full 3 × H × W images:
    MSE  = mean((w·x − w·y)²)                  torchmetrics MeanSquaredError
    PSNR = 10·log10(1 / MSE), inf when MSE = 0   torchmetrics PeakSignalNoiseRatio(data_range=1.0)
    SSIM = torchmetrics StructuralSimilarityIndexMeasure(data_range=1.0) defaults: 11-tap Gaussian window (σ 1.5),
           K1 0.01, K2 0.03, population covariances, averaged over the valid region and the channels; the maths of
           `editor.metrics.ssim` (skimage `structural_similarity` with gaussian_weights=True, sigma=1.5,
           use_sample_covariance=False, data_range=1).
  The masked-out pixels are 0 in both images, so they count as perfect matches and raise PSNR and SSIM: compare
  these numbers only between edits of the same benchmark. The script first resizes source and edit to 256 × 256
  (bicubic) and the mask (nearest): `reason_edit_resize`.
- MagicBrush L1 / L2 (OSU-NLP-Group/MagicBrush evaluation/image_eval.py `eval_distance`): the generated image resized
  to the ground truth's size (PIL bicubic), then mean |x − y| (nn.L1Loss) and mean (x − y)² (nn.MSELoss).
- Region L1 / PSNR (this project's addition, no paper defines them): the same means over only the pixels inside
  the mask (grey level ≥ 128) or outside it.

Feature metrics (backbones from local folders through transformers; sizes come from each folder's config.json)
- CLIP-I: cos(E_img(generated), E_img(reference)), E_img = CLIPModel.get_image_features (the projected pooled
  output, OpenAI CLIP's `encode_image`). MagicBrush uses OpenAI CLIP ViT-B/32.
- CLIP-T: cos(E_img(image), E_txt(caption)), E_txt = get_text_features (`encode_text`). MagicBrush: ViT-B/32; its
  paper numbers use the local captions (OSU-NLP-Group/MagicBrush#17).
- Foreground CLIP score (Reason-Edit): crop the edit to the bounding box of the mask's non-zero pixels with the right
  and bottom edges exclusive (the script's PIL crop((min x, min y, max x, max y))), then torchmetrics CLIPScore with
  openai/clip-vit-large-patch14: 100 · max(cos(E_img(crop), E_txt(text)), 0). An empty mask raises ValueError (the
  score is undefined; the script fails there too), as does a box with no area once its edges are excluded.
- DINO (MagicBrush): cos of the ViT's CLS token after the final norm (torch.hub dino_vits16's output; transformers
  ViTModel's last_hidden_state[:, 0]), with Resize(256, bicubic) of the shorter side, CenterCrop(224), ImageNet
  mean/std, written out in `dino_preprocess`.

Deviations from the original scripts
- CLIP-I / CLIP-T preprocess with the folder's CLIPImageProcessor (PIL backend: shorter side to 224 bicubic, centre
  crop 224, CLIP mean/std), not `clip.load`'s torchvision transform; the steps are the same, but the rounding of the
  resized long side and the crop offset may differ by a pixel (effect not measured). CLIPScore (foreground) uses the
  transformers processor itself, so it has no such deviation.
- Captions longer than the text tower's positions (77) are truncated by the tokenizer, keeping the end token;
  OpenAI's `clip.tokenize` raises and torchmetrics cuts the ids.
- DINO runs the transformers port (e.g. facebook/dino-vits16) instead of torch.hub; not compared numerically here.
  Resize and crop scale with the config's image_size (resize = image_size · 256 // 224), exactly 256 / 224 for
  the real model, so tiny test ViTs work.
- Float64 arithmetic throughout (the originals use float32).
- LPIPS (Reason-Edit's background LPIPS with net_type='squeeze', MA5k's) lives in editor.eval.lpips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from editor.metrics import cosine, l1, ssim_map_tensors, to_tensor

REASON_EDIT_SIZE = 256  # Reason-Edit scores at 256 × 256
MASK_THRESHOLD = 128  # grey level from which a pixel is "inside" the mask, for the region metrics
DINO_RESIZE, DINO_CROP = 256, 224
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GET_CLIP = (
    "`hf download openai/clip-vit-large-patch14 --local-dir weights/clip-vit-large-patch14` (Reason-Edit's CLIP; "
    "MagicBrush's is openai/clip-vit-base-patch32)"
)
GET_DINO = "`hf download facebook/dino-vits16 --local-dir weights/dino-vits16`"
Region = Literal["inside", "outside"]


# ------------------------------------------------------------------------------------------------ pixel metrics


def check_sizes(**images: Image.Image) -> None:
    """All images (and masks) one size; the error names the arguments."""
    (first, first_image), *rest = images.items()
    for name, image in rest:
        if image.size != first_image.size:
            raise ValueError(f"{first} and {name} differ in size: {first_image.size} vs {image.size}")


def _mse(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(((x - y) ** 2).mean())


def _psnr(mse: float) -> float:
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def reason_edit_resize(
    source: Image.Image, edit: Image.Image, mask: Image.Image, size: int = REASON_EDIT_SIZE
) -> tuple[Image.Image, Image.Image, Image.Image]:
    """Reason-Edit's first step: source and edit to size × size (bicubic), the mask (grey) to the same (nearest)."""
    square = (size, size)
    return (
        source.convert("RGB").resize(square, Image.Resampling.BICUBIC),
        edit.convert("RGB").resize(square, Image.Resampling.BICUBIC),
        mask.convert("L").resize(square, Image.Resampling.NEAREST),
    )


def background_weights(mask: Image.Image) -> torch.Tensor:
    """w = 1 − mask/255, grey levels kept, repeated over 3 channels: 3 x H x W float64."""
    grey = torch.from_numpy(np.asarray(mask.convert("L"), np.float64) / 255)
    return (1 - grey).expand(3, -1, -1)


@dataclass(frozen=True)
class BackgroundScores:
    """Reason-Edit's background preservation of one edit: higher PSNR / SSIM and lower MSE keep more."""

    psnr: float
    ssim: float
    mse: float


def background_scores(source: Image.Image, edit: Image.Image, mask: Image.Image) -> BackgroundScores:
    """PSNR, SSIM and MSE between source and edit, both weighted by `background_weights(mask)`."""
    check_sizes(source=source, edit=edit, mask=mask)
    weights = background_weights(mask)
    x, y = to_tensor(source) * weights, to_tensor(edit) * weights
    mse = _mse(x, y)
    return BackgroundScores(psnr=_psnr(mse), ssim=float(ssim_map_tensors(x, y).mean()), mse=mse)


def resized_to(generated: Image.Image, truth: Image.Image) -> Image.Image:
    """MagicBrush's `gen_img.resize(gt_img.size)`: Pillow's default filter for RGB, bicubic, written out."""
    return generated.convert("RGB").resize(truth.size, Image.Resampling.BICUBIC)


def l1_distance(generated: Image.Image, truth: Image.Image) -> float:
    """MagicBrush L1: mean |generated − truth| after resizing generated to the truth's size."""
    return l1(resized_to(generated, truth), truth)


def l2_distance(generated: Image.Image, truth: Image.Image) -> float:
    """MagicBrush L2: mean (generated − truth)² (a mean squared error, not a norm) after the same resize."""
    return _mse(to_tensor(resized_to(generated, truth)), to_tensor(truth))


def _region_pixels(
    a: Image.Image, b: Image.Image, mask: Image.Image, region: Region
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3 x N pixels of a and b inside (mask ≥ MASK_THRESHOLD) or outside the mask."""
    if region not in ("inside", "outside"):
        raise ValueError(f"region must be 'inside' or 'outside', got {region!r}")
    check_sizes(a=a, b=b, mask=mask)
    inside = torch.from_numpy(np.asarray(mask.convert("L")) >= MASK_THRESHOLD)
    keep = inside if region == "inside" else ~inside
    if not keep.any():
        raise ValueError(f"no pixels {region} the mask (grey level threshold {MASK_THRESHOLD})")
    return to_tensor(a)[:, keep], to_tensor(b)[:, keep]


def region_l1(a: Image.Image, b: Image.Image, mask: Image.Image, region: Region = "outside") -> float:
    """Mean |a − b| over the pixels inside or outside the mask only."""
    x, y = _region_pixels(a, b, mask, region)
    return float((x - y).abs().mean())


def region_psnr(a: Image.Image, b: Image.Image, mask: Image.Image, region: Region = "outside") -> float:
    """10·log10(1 / MSE) with the MSE over the pixels inside or outside the mask only; inf when they match."""
    return _psnr(_mse(*_region_pixels(a, b, mask, region)))


# ---------------------------------------------------------------------------------------------- feature metrics


def mask_box(mask: Image.Image) -> tuple[int, int, int, int]:
    """Reason-Edit's crop box (left, top, right, bottom) = (min x, min y, max x, max y) of the non-zero mask pixels,
    used as PIL's right/bottom-exclusive box, so the last masked column and row fall outside the crop."""
    ys, xs = np.nonzero(np.asarray(mask.convert("L")))
    if len(xs) == 0:
        raise ValueError("mask is empty (no non-zero pixel): the foreground CLIP score is undefined")
    box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    if box[0] == box[2] or box[1] == box[3]:
        raise ValueError(f"mask's bounding box {box} has no area once its right and bottom edges are excluded")
    return box


def _load_backbone(
    model_class: Any, folder: Path, what: str, hint: str, device: torch.device | str, dtype: torch.dtype, **kwargs: Any
) -> Any:
    """from_pretrained from a local folder, refusing checkpoints that leave parameters at random init."""
    from editor.loading import CheckpointError, require

    require(folder, f"{what} folder", hint)
    require(folder / "config.json", f"{what} config", hint)
    model, info = model_class.from_pretrained(
        folder, dtype=dtype, local_files_only=True, output_loading_info=True, **kwargs
    )
    if missing := sorted(info["missing_keys"]):
        raise CheckpointError(
            f"{folder} lacks {len(missing)} weight(s) of {model_class.__name__} (e.g. {', '.join(missing[:3])}), "
            f"which would stay random. Is it the whole model? {hint}"
        )
    return model.to(device).eval()


@dataclass(frozen=True)
class ClipScorer:
    """CLIP-I, CLIP-T and Reason-Edit's foreground score with one CLIP loaded once from `folder` (an
    openai/clip-vit-* layout: config.json, preprocessor_config.json, weights; the tokenizer files for text scores)."""

    folder: Path | str
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    model: Any = field(init=False, repr=False, compare=False)  # transformers CLIPModel
    image_processor: Any = field(init=False, repr=False, compare=False)  # CLIPImageProcessorPil
    tokenizer: Any = field(init=False, repr=False, compare=False)  # CLIPTokenizer, None without tokenizer files

    def __post_init__(self) -> None:
        from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

        from editor.loading import require

        folder = Path(self.folder)
        require(folder, "CLIP folder", GET_CLIP)
        require(folder / "preprocessor_config.json", "CLIP preprocessor config", GET_CLIP)
        model = _load_backbone(CLIPModel, folder, "CLIP", GET_CLIP, self.device, self.dtype)
        has_tokenizer = (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "image_processor", CLIPImageProcessorPil.from_pretrained(folder))
        object.__setattr__(self, "tokenizer", CLIPTokenizer.from_pretrained(folder) if has_tokenizer else None)

    @torch.inference_mode()
    def image_features(self, image: Image.Image) -> torch.Tensor:
        """E_img(image): projection_dim."""
        pixels = self.image_processor(images=image.convert("RGB"), return_tensors="pt").pixel_values
        return self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype)).pooler_output[0]

    @torch.inference_mode()
    def text_features(self, text: str) -> torch.Tensor:
        """E_txt(text): projection_dim; text truncated to the tower's positions."""
        if self.tokenizer is None:
            raise FileNotFoundError(
                f"{self.folder} has no CLIP tokenizer (tokenizer.json or vocab.json + merges.txt), needed for "
                f"text scores. How to get it: {GET_CLIP}, with the tokenizer files"
            )
        limit = self.model.config.text_config.max_position_embeddings
        tokens = self.tokenizer(text, truncation=True, max_length=limit, return_tensors="pt").to(self.device)
        return self.model.get_text_features(**tokens).pooler_output[0]

    def image_similarity(self, a: Image.Image, b: Image.Image) -> float:
        """CLIP-I: cosine of the two image embeddings (generated vs reference)."""
        return cosine(self.image_features(a), self.image_features(b))

    def text_similarity(self, image: Image.Image, text: str) -> float:
        """CLIP-T: cosine of the image and caption embeddings, in [-1, 1]."""
        return cosine(self.image_features(image), self.text_features(text))

    def foreground_score(self, image: Image.Image, mask: Image.Image, text: str) -> float:
        """Reason-Edit's foreground CLIP score in [0, 100]: the edit cropped to `mask_box(mask)` against `text`.
        Raises ValueError for an empty mask or one of another size."""
        check_sizes(image=image, mask=mask)
        return 100 * max(self.text_similarity(image.crop(mask_box(mask)), text), 0.0)


def dino_preprocess(image: Image.Image, crop: int = DINO_CROP) -> torch.Tensor:
    """MagicBrush's DINO transform, written out: Resize(crop · 256 // 224, bicubic) of the shorter side (torchvision
    rounding: long side int(resize · long / short)), CenterCrop(crop) (offsets int(round(Δ / 2))), ToTensor,
    Normalize(ImageNet mean, std). Returns 1 x 3 x crop x crop float32."""
    resize = crop * DINO_RESIZE // DINO_CROP
    width, height = image.size
    if width <= height:
        size = (resize, int(resize * height / width))
    else:
        size = (int(resize * width / height), resize)
    resized = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    left, top = int(round((size[0] - crop) / 2)), int(round((size[1] - crop) / 2))
    pixels = to_tensor(resized.crop((left, top, left + crop, top + crop)))
    mean, std = torch.tensor(IMAGENET_MEAN, dtype=torch.float64), torch.tensor(IMAGENET_STD, dtype=torch.float64)
    return ((pixels - mean[:, None, None]) / std[:, None, None]).float()[None]


@dataclass(frozen=True)
class DinoScorer:
    """DINO similarity with a ViT loaded once from `folder` (facebook/dino-vits16 layout: config.json + weights)."""

    folder: Path | str
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    model: Any = field(init=False, repr=False, compare=False)  # transformers ViTModel, no pooler

    def __post_init__(self) -> None:
        from transformers import ViTModel

        model = _load_backbone(
            ViTModel, Path(self.folder), "DINO ViT", GET_DINO, self.device, self.dtype, add_pooling_layer=False
        )
        object.__setattr__(self, "model", model)

    @torch.inference_mode()
    def features(self, image: Image.Image) -> torch.Tensor:
        """The CLS token after the final layer norm: hidden_size."""
        pixels = dino_preprocess(image, self.model.config.image_size).to(self.device, self.dtype)
        return self.model(pixel_values=pixels).last_hidden_state[0, 0]

    def similarity(self, a: Image.Image, b: Image.Image) -> float:
        """DINO: cosine of the two CLS features (generated vs reference)."""
        return cosine(self.features(a), self.features(b))
