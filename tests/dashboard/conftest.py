"""Fixtures for the dashboard tests: the sample run, a synthetic run of its own steps, and a private relex cache."""

from pathlib import Path

import pytest

from relex_core import compute_gram, open_run

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RUN = REPO_ROOT / "sample_data" / "run"
# A run that is not the sample's: none of its steps is a multiple of 48, and its default window ends at
# step 100, so a caption "0:100:" would show whether Markdown turned ":100:" into an emoji.
OTHER_STEPS = tuple(range(50, 550, 50))


@pytest.fixture(scope="session")
def relex_cache(tmp_path_factory):
    """RELEX_CACHE_DIR for the whole session, so tests never touch ~/.cache/relex; exports in a temporary root."""
    cache = tmp_path_factory.mktemp("relex-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RELEX_CACHE_DIR", str(cache))
        patch.setenv("RELEX_EXPORT_ROOT", str(tmp_path_factory.mktemp("exports")))
        patch.setenv("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
        yield cache


@pytest.fixture(scope="session")
def run_gram(relex_cache):
    assert SAMPLE_RUN.is_dir(), f"the sample run is missing: {SAMPLE_RUN}"
    return compute_gram(open_run(SAMPLE_RUN), progress=False)


@pytest.fixture(scope="session")
def other_run(tmp_path_factory):
    """A synthetic run in a temporary folder, written by relex's own HF-style writer."""
    from relex_core.synthetic import make_run

    return make_run(tmp_path_factory.mktemp("other") / "grpo-other", steps=OTHER_STEPS)


@pytest.fixture(scope="session")
def other_gram(relex_cache, other_run):
    return compute_gram(open_run(other_run), progress=False)


def steps_and_weights(run_gram):
    """The sample run's steps (the base's 0 first) and every checkpoint's tensors in float64, for brute forces."""
    from safetensors.torch import load_file

    def weights(step):
        return {name: tensor.double().numpy() for name, tensor in
                load_file(SAMPLE_RUN / f"checkpoint-{step}" / "model.safetensors").items()}

    steps = [0, *(int(step) for step in run_gram.steps)]
    return steps, [weights(step) for step in steps]
