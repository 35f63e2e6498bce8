"""Benchmark: the audit's exact nearest-neighbour search (port.audit.nearest) for 1M synthetic
images against the 10k test images at the feature width of ResNet-18 (512), in each audit space
(lanet_cosine, rms, linf): synthetic images per second of the blocked search (blocks of
port.audit.QUERY_BLOCK queries against REFERENCE_BLOCK references: matrix products, or
torch.cdist p=inf) against a plain loop over the queries (one query at a time against every
reference), same data and device.

    python bench/audit.py           # full GPU setting: 1M x 10k x 512, the plain loop on 2,000 queries
    python bench/audit.py --small   # CPU, seconds: 2,048 x 1,000 x 512, the plain loop on 256 queries

`agreement`: on the queries both paths search, the fraction whose nearest neighbour is the same
and the largest difference of the distances.
"""

from __future__ import annotations

import math

import torch

import harness
from port import audit

WIDTH = 512  # ResNet-18's penultimate features


def plain_nearest(queries: torch.Tensor, references: torch.Tensor, space: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The textbook loop: each query's distance to every reference, then its argmin."""
    distances, indices = [], []
    for query in queries:
        if space == "linf":
            distance = (references - query).abs().amax(1)
        elif space == "rms":
            distance = (references - query).norm(dim=1) / math.sqrt(len(query))
        else:
            distance = 1.0 - references @ query
        best = distance.argmin()
        distances.append(distance[best])
        indices.append(best)
    return torch.stack(distances), torch.stack(indices)


def main():
    p = harness.parser(__doc__.split("\n\n")[0])
    args = harness.parse(p)
    device = torch.device(args.device)
    if args.small:
        n_synthetic, n_test, n_plain = 2048, 1000, 256
        timing = {"warmup": 0, "repeats": 3}
    else:
        n_synthetic, n_test, n_plain = 1_000_000, 10_000, 2000
        timing = {"warmup": 1, "repeats": 2}
    generator = torch.Generator().manual_seed(0)
    synthetic = torch.rand(n_synthetic, WIDTH, generator=generator).to(device)
    test = torch.rand(n_test, WIDTH, generator=generator).to(device)
    rows = []
    for space in audit.SPACES:
        queries, references = synthetic, test
        if space == "lanet_cosine":
            queries, references = (torch.nn.functional.normalize(x, dim=1) for x in (synthetic, test))

        def blocked(queries=queries, references=references, space=space):
            return [audit.nearest(queries[i:i + audit.QUERY_BLOCK], references, space)
                    for i in range(0, len(queries), audit.QUERY_BLOCK)]

        sample = queries[:n_plain]
        fast_distance, fast_index = audit.nearest(sample, references, space)
        plain_distance, plain_index = plain_nearest(sample, references, space)
        agreement = {"n_queries": n_plain, "same_neighbour": (fast_index == plain_index).float().mean().item(),
                     "distance_max_abs_diff": (fast_distance - plain_distance).abs().max().item()}
        fast_rate = harness.rate(blocked, n_synthetic, device, **timing)
        plain_rate = harness.rate(lambda: plain_nearest(sample, references, space), n_plain, device, **timing)
        rows.append(harness.compared(f"exact nearest test image, {space}, {n_synthetic} x {n_test} x {WIDTH}",
                                     "synthetic images/s", fast_rate, plain_rate, space=space,
                                     seconds_for_all=n_synthetic / fast_rate, agreement=agreement))
    settings = {"n_synthetic": n_synthetic, "n_test": n_test, "width": WIDTH, "n_plain_queries": n_plain,
                "query_block": audit.QUERY_BLOCK, "reference_block": audit.REFERENCE_BLOCK, "dtype": "float32",
                "data": "uniform [0, 1) rows (unit rows for lanet_cosine)", "timing": timing,
                "plain": "one query at a time against every reference, then argmin"}
    harness.write_result("audit", args, settings, rows)


if __name__ == "__main__":
    main()
