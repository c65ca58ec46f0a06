import pytest

from tests.unit.pki import Pki, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Made once per run: a CA, server and client certificates (see tests/unit/pki.py)."""
    return make_pki(tmp_path_factory.mktemp("pki"))
