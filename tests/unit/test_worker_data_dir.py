"""`headroom worker` started in a folder without var/ creates its data dir, parents included (issue 9 item 7)."""

from __future__ import annotations

from pipelines.app import create_app
from pipelines.settings import Settings


def test_the_data_dir_is_created_with_its_parents(tmp_path):
    data_dir = tmp_path / "var" / "worker" / "nested"
    app = create_app(Settings(data_dir=data_dir), [])
    assert data_dir.is_dir()
    assert str(app.conf.datadir).startswith(str(data_dir))
