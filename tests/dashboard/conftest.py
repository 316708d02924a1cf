"""Fixtures for the dashboard tests: the sample run, its Gram, and a private relex cache."""

from pathlib import Path

import pytest

from relex_core import compute_gram, open_run

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RUN = REPO_ROOT / "sample_data" / "run"


@pytest.fixture(scope="session")
def relex_cache(tmp_path_factory):
    """RELEX_CACHE_DIR for the whole session, so tests never touch ~/.cache/relex."""
    cache = tmp_path_factory.mktemp("relex-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RELEX_CACHE_DIR", str(cache))
        patch.setenv("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
        yield cache


@pytest.fixture(scope="session")
def run_gram(relex_cache):
    assert SAMPLE_RUN.is_dir(), f"the sample run is missing: {SAMPLE_RUN}"
    return compute_gram(open_run(SAMPLE_RUN), progress=False)
