"""Shared helpers for the cross-package tests."""
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTDATA = REPO_ROOT.parent / "shared" / "testdata"


@pytest.fixture
def testdata():
    if not TESTDATA.is_dir():
        pytest.skip(f"reference test data not found at {TESTDATA} (the shared/ folder beside the repo)")
    return TESTDATA
