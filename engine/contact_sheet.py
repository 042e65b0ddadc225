"""Contact sheets: a grid of face images (rows = identities, columns = variations)."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def contact_sheet(images, nrow: int, margin: int = 2, background: int = 255) -> Image.Image:
    """Tile ``images`` (N,3,H,W) float in [0,1] or uint8 (tensor or array) into an RGB PIL image.

    ``nrow`` is the number of images per row (torchvision ``make_grid`` convention): pass the number
    of variations per identity to get one identity per row. Images are laid out row-major with
    ``margin`` pixels of ``background`` grey between and around them; a short last row is padded.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"contact_sheet expects (N,3,H,W) images, got shape {tuple(images.shape)}")
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    if images.dtype != torch.uint8:
        images = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    images = images.cpu()
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    n, _, h, w = images.shape
    cols = min(nrow, max(n, 1))
    rows = max(1, -(-n // cols))
    sheet = np.full((margin + rows * (h + margin), margin + cols * (w + margin), 3), background, dtype=np.uint8)
    arr = images.permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = margin + r * (h + margin), margin + c * (w + margin)
        sheet[y:y + h, x:x + w] = arr[i]
    return Image.fromarray(sheet, mode="RGB")


def save_png(image: Image.Image, path) -> None:
    """Save deterministically (fixed zlib level, no metadata) and atomically."""
    import io

    from .formats import atomic_write_bytes

    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6, optimize=False)
    atomic_write_bytes(path, buf.getvalue())
