"""Text embeddings for the coverage map, with nothing downloaded at run time.

`embed_texts(texts, endpoint)` is the one choice: without an endpoint, a hashed TF-IDF (words and
word pairs hashed into `DIMENSIONS` signed buckets, weighted by inverse document frequency over
`texts`, L2-normalised), which needs only numpy and places texts that share rare words close
together; with an `EmbeddingEndpoint`, any OpenAI-compatible `/v1/embeddings` server (vLLM, llama.cpp
`--embeddings`, Ollama, OpenAI), asked in batches. `project_2d` maps either to the plane by PCA.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise

import httpx
import numpy as np

DIMENSIONS = 1024
_WORD = re.compile(r"[a-z][a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@dataclass(frozen=True)
class EmbeddingEndpoint:
    """An OpenAI-compatible embeddings server: `base_url` ends in `/v1`; the bearer key, if any, is
    read from the environment variable `api_key_env`."""

    base_url: str
    model: str
    api_key_env: str | None = None
    batch_size: int = 64
    timeout_s: float = 60.0


def text_words(text: str) -> list[str]:
    """Lowercase words of `text`, with camelCase and snake_case names split."""
    return _WORD.findall(_CAMEL.sub(" ", text).replace("_", " ").lower())


def hashed_tfidf(texts: list[str], dimensions: int = DIMENSIONS) -> np.ndarray:
    """Rows of L2-normalised TF-IDF over words and adjacent word pairs, hashed into `dimensions`
    signed buckets (float32, one row per text; an empty text is a zero row)."""
    bags: list[Counter[int]] = []
    df: Counter[int] = Counter()
    for text in texts:
        words = text_words(text)
        bag: Counter[int] = Counter()
        for token in [*words, *(f"{a} {b}" for a, b in pairwise(words))]:
            bag[zlib.crc32(token.encode())] += 1
        bags.append(bag)
        df.update(bag.keys())
    n = len(texts)
    out = np.zeros((n, dimensions), dtype=np.float32)
    for i, bag in enumerate(bags):
        for h, count in bag.items():
            weight = (1.0 + math.log(count)) * (math.log((1 + n) / (1 + df[h])) + 1.0)
            out[i, h % dimensions] += weight if (h >> 16) & 1 else -weight
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1.0, norms)


def endpoint_embeddings(texts: list[str], endpoint: EmbeddingEndpoint) -> np.ndarray:
    """Embeddings from an OpenAI-compatible `/v1/embeddings` server, in input order."""
    headers = {}
    if endpoint.api_key_env and os.environ.get(endpoint.api_key_env):
        headers["Authorization"] = f"Bearer {os.environ[endpoint.api_key_env]}"
    rows: list[list[float]] = []
    with httpx.Client(base_url=endpoint.base_url.rstrip("/"), timeout=endpoint.timeout_s, headers=headers) as client:
        for start in range(0, len(texts), endpoint.batch_size):
            batch = [t or " " for t in texts[start:start + endpoint.batch_size]]
            reply = client.post("/embeddings", json={"model": endpoint.model, "input": batch})
            reply.raise_for_status()
            data = sorted(reply.json()["data"], key=lambda d: d["index"])
            rows.extend(d["embedding"] for d in data)
    return np.asarray(rows, dtype=np.float32).reshape(len(texts), -1)


def embed_texts(texts: list[str], endpoint: EmbeddingEndpoint | None = None) -> np.ndarray:
    """One embedding row per text: from `endpoint` when one is configured, else hashed TF-IDF."""
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    return endpoint_embeddings(texts, endpoint) if endpoint else hashed_tfidf(texts)


def project_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components of `vectors`, scaled to [0, 1] each (n x 2, outliers
    clipped to the border)."""
    n = vectors.shape[0]
    if n == 0:
        return np.zeros((0, 2))
    centred = vectors.astype(np.float64) - vectors.mean(axis=0)
    if n < 3:
        points = np.zeros((n, 2))
        points[:, 0] = np.arange(n)
    else:
        points = centred @ top_components(centred, 2)
    # Text embeddings put a few outliers far out; scale by the 1st..99th percentiles and clip them to
    # the border, so the bulk of the points spreads over the map.
    low, high = np.percentile(points, 1, axis=0), np.percentile(points, 99, axis=0)
    span = np.where(high - low == 0, 1.0, high - low)
    return np.clip((points - low) / span, 0.0, 1.0)


def top_components(centred: np.ndarray, k: int, iterations: int = 30) -> np.ndarray:
    """The `k` leading principal directions (d x k) of a centred matrix by subspace iteration: a few
    products with the n x d matrix instead of a d x d eigendecomposition (which took 7 s for 4,000 x 1,024
    on two busy cores; this takes a fraction of a second). Deterministic: a seeded start."""
    d = centred.shape[1]
    width = min(d, k + 6)  # oversampling: the leading directions converge faster
    basis, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((d, width)))
    for _ in range(iterations):
        basis, _ = np.linalg.qr(centred.T @ (centred @ basis))
    # Order the subspace's directions by the variance they carry.
    small = basis.T @ (centred.T @ (centred @ basis))
    _, vectors = np.linalg.eigh(small)
    return (basis @ vectors[:, ::-1])[:, :k]
