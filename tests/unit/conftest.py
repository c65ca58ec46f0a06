from pathlib import Path

import pytest

from tests.unit.pki import Pki, make_pki
from tests.unit.web_serving import WebConfigDir


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Made once per run: a CA, server and client certificates (see tests/unit/pki.py)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def web_dir(tmp_path: Path, pki: Pki) -> WebConfigDir:
    """A web config directory with the server certificate and the client CA installed."""
    return WebConfigDir(tmp_path, pki)
