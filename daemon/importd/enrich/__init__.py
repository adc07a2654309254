"""Enrichment from an online metadata provider (TMDB's API is the reference): the pure parts
(the rate limiter, retries, the provider's shapes, scoring) and the HTTP provider. The runs
themselves are `importd.pipeline.enrichment`; their catalog side is `importd.catalog.enrich`."""

from importd.enrich.limiter import RateLimiter, SlidingWindow
from importd.enrich.provider import (
    Candidate,
    Details,
    Kind,
    Provider,
    ProviderFailure,
    Query,
    Trace,
    fingerprint,
    parse_details,
    parse_search,
    query_of,
)
from importd.enrich.scoring import DEFAULT_MIN_CONFIDENCE, Decision, Scored, decide, ranked, score

__all__ = [
    "DEFAULT_MIN_CONFIDENCE",
    "Candidate",
    "Decision",
    "Details",
    "Kind",
    "Provider",
    "ProviderFailure",
    "Query",
    "RateLimiter",
    "Scored",
    "SlidingWindow",
    "Trace",
    "decide",
    "fingerprint",
    "parse_details",
    "parse_search",
    "query_of",
    "ranked",
    "score",
]
