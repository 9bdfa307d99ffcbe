"""Files in and out: the only checkpoint reader, the only checkpoint writer, provenance, atomic files, YAML.

  safetensors_format  file names, dtype tags, header parsing (corrupt and truncated files named)
  reader              Checkpoint, CheckpointSet: lazy per-tensor reads with byte-order, size and NaN/inf checks
  writer              ShardPlan, ShardWriter: sharded output streamed one tensor at a time
  atomic              temporary sibling + rename for every file and directory evomerge writes
  provenance          config.json patch and merge_recipe.yaml of a merged checkpoint, and reading it back
  hub                 checkpoint names: a local directory or a Hugging Face Hub id org/name[@revision], resolved
  input_files         which files of an input checkpoint may be read or copied (links: only the Hub cache's)
  yaml_files          YAML with YAML 1.2 floats

Nothing here imports torch at import time.
"""

from evomerge.io.atomic import (  # noqa: F401
    replace_atomically, write_bytes_atomic, write_json_atomic, write_text_atomic,
)
from evomerge.io.staging import (  # noqa: F401
    refuse_output_over_inputs, signals_raise, staged_output_dir,
)
from evomerge.io.hub import HubOrigin, ResolvedCheckpoint, resolve_checkpoint  # noqa: F401
from evomerge.io.reader import (  # noqa: F401
    Checkpoint, CheckpointSet, check_finite, iter_checkpoint_tensors, read_config,
)
from evomerge.io.safetensors_format import TensorInfo, read_safetensors_header  # noqa: F401
from evomerge.io.writer import PlannedTensor, ShardPlan, ShardWriter, parse_size  # noqa: F401
