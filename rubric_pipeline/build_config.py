"""Settings of `rubric-verifier build`, filled from the recipe's ``build`` section and flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from rubric_pipeline.core.config import config_hash, option
from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.prompts import PROMPT_VERSION
from rubric_pipeline.retrieval.hybrid import RetrievalConfig
from rubric_pipeline.scoring import MATCH_THRESHOLD

# fields that change how a run goes, not what it builds: left out of config_hash
RUN_ONLY_FIELDS = frozenset(
    {
        "llm_url",
        "max_concurrency",
        "timeout_s",
        "llm_trace",
        "batch_size",
        "resume",
        "limit",
        "index_dir",
        "gold",
        "web_concurrency",
        "mmap",
        "runner",
        "ray_address",
        "ray_workers",
    }
)


@dataclass
class BuildConfig(RetrievalConfig):
    """Settings of `rubric-verifier build` (recipe section ``build``; every field is also a flag)."""

    corpus: str | None = option(
        None,
        help="corpus JSONL ({id, text, title?, url?}) or a datasets folder (optional with --web-search-url)",
    )
    questions: str | None = option(None, help="questions JSONL ({qid, question})")
    gold: str | None = option(None, help="gold JSONL ({qid, nuggets, passages}) to score the build against")
    demo_world: bool = option(
        False, help="without --corpus: generate the demo world into OUTPUT/world and use it"
    )
    demo_seed: int = option(0, help="seed of the generated demo world")
    limit: int | None = option(None, help="build only the first N questions")
    # rewriting
    rewrite_depth: int = option(1, help="breadth-first rewriting depth (0: the question only)")
    rewrite_max_nodes: int = option(5, help="queries per question, the question included")
    rewrites_per_call: int = option(3, help="rewrites asked per LLM call (PRF: term blocks per node)")
    dedup_threshold: float = option(0.8, help="drop a query whose token Jaccard with a kept one is >= this")
    prf_docs: int = option(5, help="offline rewriting: feedback passages per query (RM3)")
    prf_terms: int = option(6, help="offline rewriting: expansion terms added per query")
    rewrite_tree: bool = option(
        False,
        help="with an LLM: grow Search-Gen-V's query -> passage -> query tree (rewrites conditioned on each "
        "retrieved passage) instead of flat rewriting; its passages are the ones extracted from "
        "(offline builds keep PRF expansion)",
    )
    tree_max_depth: int = option(3, help="tree: deepest node level (Search-Gen-V: up to 30)")
    tree_max_nodes: int = option(
        30, help="tree: query + passage nodes per question (Search-Gen-V: up to 300)"
    )
    tree_per_passage: int = option(3, help="tree: new queries asked per passage")
    llm_query_dedup: bool = option(True, help="tree: an LLM judge also drops duplicate queries")
    llm_passage_filter: bool = option(
        True, help="tree: an LLM judge drops passages irrelevant to the question"
    )
    # retrieval per question
    passages_per_question: int = option(10, help="passages kept per question after fusing its queries (RRF)")
    # extraction
    nuggets_per_passage: int = option(3, help="at most this many nuggets per passage")
    min_words: int = option(5, help="shortest nugget kept, in words")
    max_words: int = option(35, help="longest nugget kept, in words")
    max_nugget_chars: int = option(
        200, help="JSON-schema bound on a generated nugget or query, in characters"
    )
    clauses: bool = option(
        False, help="offline extraction: split sentences into clauses and list items (atomic statements)"
    )
    sentence_anchor: bool = option(
        True,
        help="offline extraction: every sentence must hold the question's anchor term (false: the passage "
        "must; suits corpora whose passages stay on one topic)",
    )
    min_relative_coverage: float = option(
        0.5,
        help="skip extraction from passages holding less than this share of the idf weight of question "
        "terms found in the question's best passage (0: extract from every retrieved passage)",
    )
    # merge and importance
    min_question_similarity: float = option(
        0.0,
        help="drop nuggets whose MiniLM cosine with the question is below this before merging (0: keep all)",
    )
    min_topic_similarity: float = option(
        0.0,
        help="drop nuggets whose MiniLM cosine with the centroid of the question's nuggets (what its "
        "passages say most) is below this before merging (0: keep all)",
    )
    min_agreeing_documents: int = option(
        0,
        help="keep a nugget only when candidates from at least this many other documents of its question "
        "say the same (MiniLM cosine >= agreement_similarity): what several answers state (0: keep all)",
    )
    agreement_similarity: float = option(0.7, help="cosine at which two candidates say the same")
    merge_threshold: float = option(0.8, help="cluster nuggets whose mean MiniLM cosine is >= this")
    llm_merge: bool = option(True, help="with an LLM: rewrite multi-member clusters into one nugget")
    llm_importance: bool = option(True, help="with an LLM: label importance with it (else the offline rule)")
    vital_min_passages: int = option(
        2, help="offline rule: vital when this many distinct passages support it"
    )
    vital_top_rank: int = option(1, help="offline rule: vital when it comes from a passage ranked above this")
    max_rubrics: int = option(20, help="at most this many rubrics per question")
    # LLM
    llm_url: list[str] = option([], help="OpenAI-compatible base URL(s); none: offline backends everywhere")
    model: str = option("", help="model name served at --llm-url")
    llm_api: Literal["chat", "completions"] = option(
        "chat", help="'completions' for base models without a chat template"
    )
    max_tokens: int = option(256, help="max new tokens per rewrite/extraction call")
    max_concurrency: int = option(16, help="LLM requests in flight at once")
    timeout_s: float = option(120.0, help="per-request LLM timeout")
    seed: int = option(0, help="sampling seed sent with every LLM request")
    llm_trace: str | None = option(None, help="append every LLM call to this JSONL file")
    # run
    batch_size: int = option(8, help="questions that go through the stages together")
    resume: bool = option(True, help="skip questions already in OUTPUT/progress.jsonl (false: start over)")
    runner: Literal["local", "ray"] = option(
        "local", help="run the per-question stages in this process (local) or on Ray Data (ray)"
    )
    ray_address: str | None = option(
        None, help="Ray cluster to join (e.g. ray://head:10001 or auto); none: start a local one"
    )
    ray_workers: int = option(2, help="Ray actors building batches at once (each loads the index)")
    match_threshold: float = option(
        MATCH_THRESHOLD, help="scoring: MiniLM cosine at which a rubric matches a gold nugget (one-to-one)"
    )
    recall_k: int = option(10, help="scoring: retrieval recall cut-off")

    def __post_init__(self) -> None:
        at_least_one = (
            "chunk_words", "depth", "k", "embed_batch_size", "web_concurrency", "rewrite_max_nodes",
            "rewrites_per_call", "prf_docs", "prf_terms", "passages_per_question", "nuggets_per_passage",
            "min_words", "max_nugget_chars", "max_rubrics", "max_tokens", "max_concurrency", "batch_size",
            "recall_k", "vital_min_passages", "tree_max_depth", "tree_max_nodes", "tree_per_passage",
            "ray_workers", "ivf_nprobe",
        )  # fmt: skip
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise ConfigError(f"build option {name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "overlap_words",
            "rewrite_depth",
            "rrf_k",
            "vital_top_rank",
            "ivf_nlist",
            "min_agreeing_documents",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"build option {name} must be >= 0, got {getattr(self, name)}")
        for name in (
            "dedup_threshold",
            "min_relative_coverage",
            "merge_threshold",
            "match_threshold",
            "min_question_similarity",
            "min_topic_similarity",
            "agreement_similarity",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"build option {name} must be within [0, 1], got {getattr(self, name)}")
        if self.overlap_words >= self.chunk_words:
            raise ConfigError(
                f"overlap_words ({self.overlap_words}) must be < chunk_words ({self.chunk_words})"
            )
        if self.min_words > self.max_words:
            raise ConfigError(f"min_words ({self.min_words}) must be <= max_words ({self.max_words})")
        if self.timeout_s <= 0:
            raise ConfigError(f"build option timeout_s must be > 0, got {self.timeout_s}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"build option limit must be >= 1, got {self.limit}")
        if not self.bm25 and not self.dense:
            raise ConfigError("enable at least one of --bm25 and --dense")
        if self.llm_url and not self.model:
            raise ConfigError("--llm-url needs --model (the name the server serves)")

    @property
    def offline(self) -> bool:
        return not self.llm_url

    def retrieval(self) -> RetrievalConfig:
        return RetrievalConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RetrievalConfig)})

    def content_hash(self) -> str:
        values = {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_ONLY_FIELDS}
        return config_hash(values, PROMPT_VERSION)
