"""Binary segmentation with a hard threshold (seed scenario 5), trained on its own 0/1 masks.

A small CNN produces per-pixel logits and the model outputs the binary mask a deployed
segmenter outputs::

    mask = (torch.sigmoid(logits) > self.threshold).float()

The loss is the soft Dice loss of that mask against the true shapes.  The hard ``>`` has
no gradient, so without sll_fx the loss does not depend on the CNN at all.
``sll_fx.linearize_module`` rewrites it into ``sll.compare(gt)`` (eps in probability
units): pixels whose probability is within eps of the threshold get a gradient, and the
convolutions learn from them.  The images are generated: discs and rectangles of random
brightness on a noisy background with a brightness gradient (so a fixed threshold on the
raw intensity is not enough).

    python examples/segmentation.py           # about 15 seconds on 2 cores
    python examples/segmentation.py --fast    # a few seconds (the tests use this)
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import sll_fx
from _common import window


class Segmenter(nn.Module):
    def __init__(self, channels: int = 8, threshold: float = 0.5):
        super().__init__()
        self.threshold = threshold
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(channels, 1, 1),
        )

    def forward(self, image):
        logits = self.net(image)
        mask = (torch.sigmoid(logits) > self.threshold).float()
        return mask


def make_images(n: int, size: int = 32, seed: int = 0):
    """Images [n, 1, size, size] with 1-3 discs/rectangles each, and their true masks."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    masks = torch.zeros(n, size, size)
    images = torch.zeros(n, size, size)
    for i in range(n):
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            cy, cx = (torch.rand(2, generator=g) * size).tolist()
            r = 3 + 5 * torch.rand(1, generator=g).item()
            if torch.rand(1, generator=g).item() < 0.5:
                shape = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
            else:
                shape = ((yy - cy).abs() < r) & ((xx - cx).abs() < 0.7 * r)
            masks[i] = torch.maximum(masks[i], shape.float())
            images[i] = torch.maximum(images[i], shape.float() * (0.6 + 0.4 * torch.rand(1, generator=g).item()))
        tilt = (torch.rand(2, generator=g) - 0.5) * 0.8
        images[i] += tilt[0] * (yy / size - 0.5) + tilt[1] * (xx / size - 0.5)
    images += 0.25 * torch.randn(images.shape, generator=g)
    return images.unsqueeze(1), masks.unsqueeze(1)


def dice_loss(mask, target) -> torch.Tensor:
    inter = (mask * target).sum((1, 2, 3))
    return (1 - (2 * inter + 1) / (mask.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)).mean()


def iou(mask, target) -> float:
    inter = (mask * target).sum()
    return (inter / (mask + target - mask * target).sum()).item()


def train(model, images, masks, steps: int, batch: int = 32, lr: float = 1e-2) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        idx = torch.randint(0, len(images), (batch,), generator=torch.Generator().manual_seed(step))
        loss = dice_loss(model(images[idx]), masks[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--eps", type=float, default=0.2, help="band half-width, in probability units")
    p.add_argument("--fast", action="store_true", help="few steps, small data (for the tests)")
    args = p.parse_args(argv)
    if args.fast:
        args.steps = 40
    images, masks = make_images(128 if args.fast else 1024)
    test_images, test_masks = make_images(256, seed=1)

    torch.manual_seed(0)
    model = Segmenter()
    untrained = iou(model(test_images), test_masks)

    print("== linearize ==")
    gm = sll_fx.linearize_module(model, eps=args.eps)
    print(f"\n== train {args.steps} steps (eps={args.eps}) ==")
    losses = train(gm, images, masks, args.steps)
    first, last, k = window(losses)
    print(f"soft Dice loss of the mask: first {k} steps {first:.3f} -> last {k} steps {last:.3f}")
    loss = dice_loss(Segmenter()(images[:32]), masks[:32])
    print(f"without sll_fx: loss.requires_grad = {loss.requires_grad}; the hard '>' cuts the graph, "
          "loss.backward() raises and the CNN never changes")

    print("\n== export hard ==")
    hard = sll_fx.export_hard(gm)
    same = torch.equal(hard(test_images), model(test_images))
    print(f"\nhard model == original model, bit for bit: {same}")
    score = iou(hard(test_images), test_masks)
    raw = iou((test_images > 0.3).float(), test_masks)
    print(f"test IoU of the exported hard masks: {score:.3f} (untrained: {untrained:.3f}; "
          f"thresholding the raw image at 0.3: {raw:.3f})")
    return {"losses": losses, "bit_identical": same, "iou": score, "untrained_iou": untrained, "raw_iou": raw,
            "rewrite": gm.sll_report, "strip": hard.sll_report}


if __name__ == "__main__":
    main()
