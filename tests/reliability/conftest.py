"""--import-mode=importlib puts no test folder on sys.path: make this folder's shared checks
(hostile.py) importable by its tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
