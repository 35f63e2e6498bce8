"""Train on a mixture of generators: each member's share of the k selected images, chosen among
that member's own filtered images (the current CIFAR-10 record trains on three generators'
images; Bartoldson et al. 2024).

- Shares: the k images split by the members' fractions, rounded by largest remainder (floor
  each k * fraction, then one more image to the largest remainders, earlier members first on
  ties), so they add up to k exactly.
- Fractions: given in the config, or (`weights: arc`) from ARC: member i weighs
  ARC_max - ARC_i, where ARC_max is the ARC of a discriminator right at every grid eps (the
  most a generator can lose), so a lower ARC gets more weight and a generator a robust
  discriminator always tells apart gets none.
- Selection per member: `adaptive` takes the member's share from its own lowest synthetic
  scores (two generators' discriminators do not score on one scale), `random` samples the share
  at random. The merged set interleaves the members evenly, records per image which member it
  came from (`generator`, an index into the `generator_names` attribute), and a summary CSV
  gives each member's share.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from .artifacts import (ImageWriter, dataset_of, image_set_length, iter_image_blocks, provenance, read_arrays, read_csv,
                        write_csv)
from .errors import ArtifactError, SettingsError
from .paths import MIXTURE_SELECTIONS, needs_scores
from .seeds import derive_seed
from .selection import choose, without_test_duplicates

log = logging.getLogger(__name__)


def largest_remainder_shares(k: int, fractions: list[float]) -> list[int]:
    """Integer shares of k in proportion to `fractions` (summing to 1), adding up to k exactly."""
    fractions = np.asarray(fractions, dtype=float)
    exact = k * fractions / fractions.sum()
    shares = np.floor(exact).astype(int)
    remainders = exact - shares
    order = np.argsort(-remainders, kind="stable")  # ties: the member listed first
    shares[order[:k - int(shares.sum())]] += 1
    return shares.tolist()


def arc_fractions(arc_by_member: dict[str, float], arc_max: float) -> dict[str, float]:
    """Fractions from ARC: member i weighs arc_max - ARC_i (lower ARC, more weight)."""
    weights = {name: arc_max - value for name, value in arc_by_member.items()}
    bad = {name: value for name, value in arc_by_member.items() if not 0 <= value <= arc_max}
    if bad:
        raise ArtifactError(f"ARC of {bad} outside [0, {arc_max:g}], the range of the eps grid")
    total = sum(weights.values())
    if total <= 0:
        raise ArtifactError(f"weights arc: every member has the largest possible ARC ({arc_max:g}): no weight left")
    return {name: weight / total for name, weight in weights.items()}


def member_arc(arc_summary, members: list[str]) -> dict[str, float]:
    """Each member's ARC, the mean over discrimination seeds in arc_summary.csv."""
    summary = read_csv(arc_summary)
    arc = summary[summary["metric"] == "arc"].set_index("generator")["mean"]
    missing = [name for name in members if name not in arc.index]
    if missing:
        raise ArtifactError(f"{arc_summary}: no ARC for {missing} (add them to generator_ranking.generators)")
    return {name: float(arc[name]) for name in members}


def interleaved_members(shares: list[int]) -> np.ndarray:
    """The member of each position of the merged set: every member spread evenly over the set,
    so that any stretch of it (a group of chunks the training stream pools) holds the shares."""
    members = np.repeat(np.arange(len(shares), dtype=np.int16), shares)
    position = np.concatenate([(np.arange(share) + 0.5) / share for share in shares if share] or [np.empty(0)])
    return members[np.argsort(position, kind="stable")]


class _ChosenImages:
    """A member's chosen images in index order, handed out `n` at a time (bounded memory)."""

    def __init__(self, images_path, chosen: np.ndarray):
        self.chosen, self.taken = chosen, 0
        mask = np.zeros(image_set_length(images_path), dtype=bool)
        mask[chosen] = True
        self._blocks = ((block[mask[offset:offset + len(block)]]) for offset, block in iter_image_blocks(images_path)
                        if mask[offset:offset + len(block)].any())
        self._pending = None

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        parts, have = [], 0
        while have < n:
            if self._pending is None or not len(self._pending):
                self._pending = next(self._blocks)
            part, self._pending = self._pending[:n - have], self._pending[n - have:]
            parts.append(part)
            have += len(part)
        index = self.chosen[self.taken:self.taken + n]
        self.taken += n
        return (np.concatenate(parts) if parts else None), index


def select_mixture(*, images_paths, filter_paths, out_path, out_csv, mixture: str, members: list[str], method: str,
                   k: int, seed: int, fractions: dict | None = None, scores_paths=None, arc_summary=None,
                   eps_grid: list[float] | None = None, audit_paths=None) -> dict[str, int]:
    """Merge each member's share of k chosen images (with pseudo-labels, scores when the method
    ranks by them, and the member index per image) into `out_path`; `out_csv` has a row per
    member. `fractions` (by member) or, when None, ARC from `arc_summary` with the eps grid.
    With `audit_paths` (one per member), each member's near-duplicates of test images are not
    candidates (port.selection.without_test_duplicates); the set records how many left in all."""
    if method not in MIXTURE_SELECTIONS:
        raise SettingsError(f"mixture '{mixture}': selection '{method}' does not split k among generators "
                            f"(a mixture takes {', '.join(MIXTURE_SELECTIONS)})")
    if not k:
        raise SettingsError(f"mixture '{mixture}': selection.k must be a number (each member takes a share of it)")
    if fractions is None:
        from .discrimination import EPS_UNIT

        fractions = arc_fractions(member_arc(arc_summary, members), 0.5 * (max(eps_grid) - min(eps_grid)) / EPS_UNIT)
    shares = largest_remainder_shares(k, [fractions[name] for name in members])
    scores_paths = list(scores_paths) if needs_scores(method) else [None] * len(members)
    audit_paths = list(audit_paths) if audit_paths else [None] * len(members)
    chosen, per_image, rows, shape = [], [], [], None
    for name, share, images_path, filter_path, scores_path, audit_path in zip(
            members, shares, images_paths, filter_paths, scores_paths, audit_paths, strict=True):
        arrays = read_arrays(filter_path, "keep", "labels")
        keep, removed = without_test_duplicates(arrays["keep"], audit_path) if audit_path else (arrays["keep"], 0)
        n_filtered = int(keep.sum())
        if n_filtered < share:
            raise ArtifactError(f"mixture '{mixture}': member '{name}' has {share} of k={k} images to give "
                                f"(fraction {fractions[name]:.4g}) but only {n_filtered} passed the filter "
                                f"({filter_path}{f', less {removed} near-duplicates of test images' if removed else ''})")
        scores = read_arrays(scores_path, "score")["score"] if scores_path is not None else None
        picked = choose(keep, method, share, derive_seed(seed, name), scores)
        block = next(iter_image_blocks(images_path, block=1))[1]
        if shape is not None and block.shape[1:] != shape:
            raise ArtifactError(f"mixture '{mixture}': {images_path} holds images of shape {block.shape[1:]}, "
                                f"the first member's are {shape}")
        shape = block.shape[1:]
        chosen.append(picked)
        per_image.append({"labels": arrays["labels"], **({} if scores is None else {"score": scores})})
        rows.append({"mixture": mixture, "selection": method, "generator": name, "fraction": fractions[name],
                     "n_selected": share, "n_filtered": n_filtered, "n_test_duplicates_removed": removed,
                     "score_mean": float(scores[picked].mean()) if scores is not None and share else np.nan,
                     "score_max": float(scores[picked].max()) if scores is not None and share else np.nan})
    described = ",".join(f"{name}:{share}" for name, share in zip(members, shares))
    attrs = provenance("select_mixture", {"method": method, "k": k, "fractions": fractions}, seed,
                       dataset=dataset_of(images_paths[0]), generator=mixture, generator_shares=described,
                       test_duplicates_removed=sum(row["n_test_duplicates_removed"] for row in rows),
                       generator_names=json.dumps(members))
    order = interleaved_members(shares)
    readers = [_ChosenImages(path, picked) for path, picked in zip(images_paths, chosen)]
    with ImageWriter(out_path, shape, attrs) as writer:
        for start in range(0, len(order), writer.chunk_images):
            block_members = order[start:start + writer.chunk_images]
            images = np.empty((len(block_members), *shape), dtype=np.uint8)
            columns = {key: np.empty(len(block_members), dtype=values.dtype) for key, values in per_image[0].items()}
            source_index = np.empty(len(block_members), dtype=np.int64)
            for member, reader in enumerate(readers):
                at = block_members == member
                if at.any():
                    images[at], index = reader.take(int(at.sum()))
                    source_index[at] = index
                    for key in columns:
                        columns[key][at] = per_image[member][key][index]
            writer.append(images, source_index=source_index, generator=block_members, **columns)
    write_csv(pd.DataFrame(rows), out_csv)
    log.info("mixture %s (%s): %s", mixture, method, described)
    return dict(zip(members, shares))
