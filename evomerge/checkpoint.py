"""Kept for one release: the checkpoint reader and writer moved to the `evomerge.io` package
(`evomerge.io.reader`, `evomerge.io.writer`, `evomerge.io.atomic`); import them from there."""

from evomerge.io.staging import staged_output_dir  # noqa: F401
from evomerge.io.reader import Checkpoint, CheckpointSet, check_finite, iter_checkpoint_tensors  # noqa: F401
from evomerge.io.safetensors_format import (  # noqa: F401
    CONFIG_FILE, FLOAT_DTYPES, INDEX_FILE, SAFETENSORS_DTYPES, SINGLE_FILE, TensorInfo, read_safetensors_header,
)
from evomerge.io.writer import (  # noqa: F401
    SIDE_FILE_PATTERNS, WRITEBACK_BYTES, PlannedTensor, ShardPlan, ShardWriter, copy_side_files, parse_size,
    start_writeback, write_json,
)
