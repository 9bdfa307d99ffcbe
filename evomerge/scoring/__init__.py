"""The scoring layer shared by the search and the sweep: workers, pools (inline / local / Ray), the
evaluation cache, the cached job queue, and the typed values they return (JobKey, EvalOutcome,
SuiteSummary, Producer)."""

from evomerge.scoring.outcomes import EvalJob, EvalOutcome, JobKey, Producer, SuiteSummary

__all__ = ["EvalJob", "EvalOutcome", "JobKey", "Producer", "SuiteSummary"]
