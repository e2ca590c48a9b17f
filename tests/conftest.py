from pathlib import Path

import polars as pl
import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(name: str) -> pl.DataFrame:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real data set {path} is absent (needs ../shared/data beside the repo)")
    return pl.read_parquet(path)


@pytest.fixture(scope="session")
def topics():
    from mmq.datasets import make_topics

    return make_topics(n_rows=4000, seed=0)
