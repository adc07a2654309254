"""Maintenance: symlink repair, the orphan-link trash, the repair log, and integrity sweeps.

Library layer only: pure stage functions and small classes; failures are values, the clock is
passed in, every path is bytes. The service wires them to the catalog, the API and `importctl`.
"""

from importctl.findings import (
    EXIT_BITS,
    KINDS,
    Finding,
    FindingKind,
    FindingReport,
    exit_status,
    shell_quote,
    suggestion_for,
)
from importd.maintenance.links import (
    Candidate,
    CandidateSource,
    LastKnown,
    LinkClassifier,
    LinkError,
    LinkInfo,
    LinkProposal,
    Move,
    RepairFailure,
    RepairResult,
    apply_repair,
    classify_link,
    propose_repair,
    stale_reason,
)
from importd.maintenance.repairlog import LogFailure, LogWritten, RepairLog, RepairLogEntry
from importd.maintenance.scrub import (
    Budget,
    BudgetError,
    Scrubber,
    ScrubPlan,
    ScrubProgress,
    ScrubResult,
    ScrubTarget,
    parse_budget,
)
from importd.maintenance.sweep import finding_for_link, finding_for_scrub, findings_from_walk
from importd.maintenance.trash import RestoreFailure, RestoreResult, Trash, TrashFailure, TrashRecord
from importd.priority import lower_thread_priority

__all__ = [
    "EXIT_BITS",
    "KINDS",
    "Budget",
    "BudgetError",
    "Candidate",
    "CandidateSource",
    "Finding",
    "FindingKind",
    "FindingReport",
    "LastKnown",
    "LinkClassifier",
    "LinkError",
    "LinkInfo",
    "LinkProposal",
    "LogFailure",
    "LogWritten",
    "Move",
    "RepairFailure",
    "RepairLog",
    "RepairLogEntry",
    "RepairResult",
    "RestoreFailure",
    "RestoreResult",
    "ScrubPlan",
    "ScrubProgress",
    "ScrubResult",
    "ScrubTarget",
    "Scrubber",
    "Trash",
    "TrashFailure",
    "TrashRecord",
    "apply_repair",
    "classify_link",
    "exit_status",
    "finding_for_link",
    "finding_for_scrub",
    "findings_from_walk",
    "lower_thread_priority",
    "parse_budget",
    "propose_repair",
    "shell_quote",
    "stale_reason",
    "suggestion_for",
]
