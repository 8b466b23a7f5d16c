import sys
from pathlib import Path

# The deployment tests start griffin-server replicas with the same harness as tests/python.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
