"""k nearest neighbours of every row (squared Euclidean, self excluded, ties to the smaller index):
exact in torch blocks, approximate with a faiss IVF index, and the exact re-ranking of candidates
found in a reduced space."""

from __future__ import annotations

import math

import numpy as np

from .distances import squared_distances_torch
from .rows import BLOCK_ROWS, read_rows


def _pick_nearest(dist: np.ndarray, index: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` candidates with the smallest distance, ties to the smaller index."""
    order = np.lexsort((index, dist), axis=-1)
    order = order[:, :k]
    return np.take_along_axis(dist, order, 1), np.take_along_axis(index, order, 1)


def exact_knn(x: np.ndarray, k: int, *, max_block_elems: int = 1 << 26) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours (squared Euclidean, self excluded) of every row of ``x``.

    Block-wise ``torch`` matmul + ``topk`` over a few extra candidates, whose distances are then
    recomputed directly (no cancellation) and ordered by (distance, index). Returns ``(dist, index)``
    of shape ``(n, min(k, n - 1))``.
    """
    import torch  # here, not at the top: importing torch takes seconds and most callers of numerics never need it

    n = len(x)
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros((n, 0)), np.zeros((n, 0), dtype=np.int64)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    sq = (t * t).sum(1)
    extra = min(n - 1, k + 4)
    block = int(max(16, min(4096, max_block_elems // n)))
    dist_out = np.empty((n, k))
    index_out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, block):
        stop = min(n, start + block)
        q = t[start:stop]
        d2 = squared_distances_torch(q, t, a_sq=sq[start:stop], b_sq=sq)
        d2[torch.arange(stop - start), torch.arange(start, stop)] = torch.inf
        cand = torch.topk(d2, extra, dim=1, largest=False).indices
        del d2
        for sub in range(0, stop - start, 256):  # recompute the candidates' distances directly
            c = cand[sub:sub + 256]
            exact = ((q[sub:sub + 256].double().unsqueeze(1) - t[c].double()) ** 2).sum(-1).numpy()
            rows = slice(start + sub, start + sub + len(c))
            dist_out[rows], index_out[rows] = _pick_nearest(exact, c.numpy(), k)
    return dist_out, index_out


def build_ivf_index(x: np.ndarray, *, seed: int):
    """A faiss ``IndexIVFFlat`` (L2) over the rows of ``x``: ``nlist = clip(4 * sqrt(n), 1, n // 39)``
    inverted lists, trained on at most ``64 * nlist`` rows drawn with ``seed``."""
    import faiss

    n, p = x.shape
    nlist = int(max(1, min(int(4 * math.sqrt(n)), n // 39)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(p), p, nlist, faiss.METRIC_L2)
    index.cp.seed = seed
    rng = np.random.default_rng(seed)
    train = x if n <= 64 * nlist else x[np.sort(rng.choice(n, 64 * nlist, replace=False))]
    index.train(np.ascontiguousarray(train, dtype=np.float32))
    index.add(np.ascontiguousarray(x, dtype=np.float32))
    return index, {"nlist": nlist, "train_points": int(len(train))}


def search_ivf(index, x: np.ndarray, rows: np.ndarray, k: int, *, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """kNN of the rows ``rows`` of ``x`` (self excluded, ties to the smaller index); missing
    neighbours (tiny lists) get index -1 and distance inf."""
    index.nprobe = int(min(nprobe, index.nlist))
    dist, idx = index.search(np.ascontiguousarray(x[rows], dtype=np.float32), k + 1)
    dist = dist.astype(np.float64)
    dist[(idx == np.asarray(rows)[:, None]) | (idx < 0)] = np.inf
    idx = np.where(idx < 0, len(x), idx)  # sorts missing entries last
    d_k, i_k = _pick_nearest(dist, idx, k)
    i_k[~np.isfinite(d_k)] = -1
    return d_k, i_k


def ivf_knn(x: np.ndarray, k: int, *, nprobe: int, seed: int, block_rows: int = BLOCK_ROWS) -> tuple[np.ndarray, np.ndarray, dict]:
    """Approximate kNN (squared Euclidean, self excluded) of every row with :func:`build_ivf_index`,
    ``nprobe`` lists searched per query."""
    n = len(x)
    x = np.ascontiguousarray(x, dtype=np.float32)
    index, info = build_ivf_index(x, seed=seed)
    k = min(k, n - 1)
    dist_out = np.empty((n, k))
    index_out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, block_rows):
        rows = np.arange(start, min(n, start + block_rows))
        dist_out[rows], index_out[rows] = search_ivf(index, x, rows, k, nprobe=nprobe)
    info["nprobe"] = int(index.nprobe)
    info["lists"] = _list_of_rows(index, n)
    return dist_out, index_out, info


def _list_of_rows(index, n: int) -> np.ndarray:
    """The inverted list each row was added to (read back from the index)."""
    import faiss

    lists = np.zeros(n, dtype=np.int64)
    for list_id in range(index.nlist):
        size = index.invlists.list_size(list_id)
        if size:
            lists[faiss.rev_swig_ptr(index.invlists.get_ids(list_id), size)] = list_id
    return lists


def rerank_exact(array: np.ndarray, candidates: np.ndarray, k: int, *, normalize: bool,
                 group: np.ndarray | None = None, block_rows: int = 4096, sub_block_rows: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Keep, for every row, the ``k`` candidates nearest in the *full* embedding.

    ``candidates`` (n, c) come from a search in a reduced space (-1: none). Rows are visited in
    the order of ``group`` (e.g. their inverted list), so that the candidates of consecutive rows
    overlap: for each block of ``block_rows`` rows, the union of the rows and their candidates is
    read once (about one pass over the data in all), and every ``sub_block_rows`` rows get their
    dot products from one matmul against their own candidates' union. Squared distances
    ``|q|^2 + |u|^2 - 2 q.u`` (float32 products, clipped at 0); ties to the smaller index.
    """
    import torch

    n = len(candidates)
    k = min(k, candidates.shape[1])
    order = np.argsort(group, kind="stable") if group is not None else np.arange(n)
    dist_out = np.full((n, k), np.inf)
    index_out = np.full((n, k), -1, dtype=np.int64)
    for start in range(0, n, block_rows):
        rows = order[start:start + block_rows]
        cand = candidates[rows]
        needed = np.unique(np.concatenate([rows, cand[cand >= 0]]))
        vectors = torch.from_numpy(read_rows(array, needed, normalize=normalize))
        sq_norms = (vectors * vectors).sum(1).double().numpy()
        for sub in range(0, len(rows), sub_block_rows):
            sub_rows = rows[sub:sub + sub_block_rows]
            sub_cand = cand[sub:sub + sub_block_rows]
            valid = sub_cand >= 0
            union, inverse = np.unique(sub_cand[valid], return_inverse=True)
            q_pos = np.searchsorted(needed, sub_rows)
            u_pos = np.searchsorted(needed, union)
            position = np.zeros(sub_cand.shape, dtype=np.int64)
            position[valid] = inverse
            products = vectors[torch.from_numpy(q_pos)] @ vectors[torch.from_numpy(u_pos)].T
            dots = torch.gather(products, 1, torch.from_numpy(position)).double().numpy()
            dist = np.maximum(sq_norms[q_pos][:, None] + sq_norms[u_pos][position] - 2.0 * dots, 0.0)
            dist[~valid] = np.inf
            d_k, i_k = _pick_nearest(dist, np.where(valid, sub_cand, n), k)
            i_k[~np.isfinite(d_k)] = -1
            dist_out[sub_rows], index_out[sub_rows] = d_k, i_k
    return dist_out, index_out
