import os
import sys
from pathlib import Path

import pytest

TRAIN = Path(__file__).resolve().parents[1]
if str(TRAIN) not in sys.path:
  sys.path.insert(0, str(TRAIN))

import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def griffin_cli():
  path = os.environ.get("GRIFFIN_CLI")
  if not path or not Path(path).exists():
    pytest.fail("GRIFFIN_CLI is not set to a built griffin-cli (make test sets it)", pytrace=False)
  return path
