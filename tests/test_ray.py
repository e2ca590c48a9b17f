"""mmq.ray on a real local Ray cluster (2 CPUs): every callable's output equals the
single-process API's exactly, on the real data sets; a killed worker is retried; bad
input is an MmqError subclass raised from the driver."""
import os
import pickle
import signal

import numpy as np
import polars as pl
import pytest

import mmq
from conftest import shared_data

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'mmq[ray]' to run the mmq.ray tests")
import mmq.ray as mr  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True
    yield
    ray.shutdown()


def _collect(ds) -> pl.DataFrame:
    return mr.to_polars(ds)


@pytest.fixture(scope="module")
def mvsa():
    return shared_data("mvsa_tweets.parquet")


@pytest.fixture(scope="module")
def models(mvsa, tmp_path_factory):
    """A text model (softmax), an hs model, a discrete-fusion model with a PQ image
    column, a continuous (gated) model, a many-modality deepset and a late-fusion model,
    each fitted on mvsa_tweets' train split and saved."""
    tr = mvsa.filter(pl.col("split") == "train")
    va = mvsa.filter(pl.col("split") == "valid")
    d = tmp_path_factory.mktemp("models")
    base = dict(dim=16, epoch=3, threads=1, seed=1, progress=False)
    out = {
        "text": mmq.Classifier(word_ngrams=2, **base).fit(tr),
        "hs": mmq.Classifier(loss="hs", **base).fit(tr),
        "discrete": mmq.Classifier(dense={"image": mmq.PQ(m=8, k=16)}, **base).fit(tr),
        "gated": mmq.Classifier(dense={"image": None}, fusion="gated", **base).fit(tr),
        "deepset": mmq.Classifier(dense={"image": mmq.PQ(m=8, k=16)}, fusion="deepset", **base).fit(tr),
        "late": mmq.Classifier(head="linear", dense={"image": None}, fusion="late", epoch=3, threads=1,
                               seed=1, progress=False).fit(tr, valid=va),
    }
    paths = {}
    for name, clf in out.items():
        paths[name] = str(d / f"{name}.mmq")
        clf.save(paths[name])
    return out, paths


@pytest.mark.parametrize("kind", ["text", "hs", "discrete", "gated", "deepset", "late"])
def test_predict_equals_the_api_for_every_model_kind(cluster, mvsa, models, kind):
    clfs, paths = models
    clf = clfs[kind]
    df = mvsa.filter(pl.col("split") == "test")
    ds = ray.data.from_arrow(df.to_arrow()).repartition(3).materialize()
    got = _collect(mr.predict(ds, paths[kind], k=1, workers=2, batch_size=100))
    want = clf.predict(df)
    assert got.get_column("id").to_list() == df.get_column("id").to_list()
    assert got.get_column("pred_label").to_list() == want.get_column("label").to_list()
    np.testing.assert_array_equal(got.get_column("pred_prob").to_numpy(), want.get_column("prob").to_numpy())
    # every label's probability, bit for bit, from an object (not a path) this time
    got = _collect(mr.predict(ds, clf, proba=True, keep=["id"], workers=1))
    assert got.columns == ["id", "proba"]
    np.testing.assert_array_equal(np.stack(got.get_column("proba").to_numpy()), clf.predict_proba(df).to_numpy())


def test_predict_top_k_and_threshold(cluster, mvsa, models):
    clf = models[0]["text"]
    df = mvsa.filter(pl.col("split") == "test")
    ds = ray.data.from_arrow(df.to_arrow())
    got = _collect(mr.predict(ds, clf, k=2, threshold=0.3, workers=2, batch_size=64))
    want = clf.predict(df, k=2, threshold=0.3)
    assert got.get_column("pred_label").to_list() == want.get_column("label").to_list()
    assert got.get_column("pred_prob").to_list() == want.get_column("prob").to_list()


def test_the_callable_works_in_a_users_own_map_batches_call(cluster, mvsa, models):
    clf, path = models[0]["text"], models[1]["text"]
    df = mvsa.filter(pl.col("split") == "test").select("id", "text")
    ref = ray.put(clf)  # an object-store reference, resolved once per worker
    for fmt in ("pyarrow", "pandas"):
        out = ray.data.from_arrow(df.to_arrow()).map_batches(
            mr.Predict, fn_constructor_kwargs={"model": ref}, batch_format=fmt,
            compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1)
        got = _collect(out)
        assert got.get_column("pred_label").to_list() == clf.predict(df).get_column("label").to_list()
    # and as a plain (task) function: an instance, called outside any actor
    f = mr.Predict(path)
    got = mr.to_polars(f(df.to_arrow()))
    assert got.get_column("pred_label").to_list() == clf.predict(df).get_column("label").to_list()


@pytest.mark.parametrize("make", [lambda: mmq.PQ(m=16, k=32, seed=3), lambda: mmq.RSPQ(m=8, s=64, k=300, seed=4),
                                  lambda: mmq.PQ(m=8, k=16, transform="l2")])
def test_encode_equals_the_api_with_nulls(cluster, mvsa, make):
    x = mvsa.get_column("image")
    q = make().fit(x.to_numpy())
    df = mvsa.select("id", pl.when(pl.col("id") % 7 == 0).then(None).otherwise(pl.col("image")).alias("image"))
    ds = ray.data.from_arrow(df.to_arrow()).repartition(4).materialize()
    got = _collect(mr.encode(ds, q, column="image", workers=2))
    want = df.with_columns(pl.col("image").mmq.encode(q).alias("image_codes"))
    assert got.get_column("image_codes").dtype == want.get_column("image_codes").dtype
    assert got.get_column("image_codes").to_list() == want.get_column("image_codes").to_list()
    assert got.get_column("image_codes").null_count() == df.get_column("image").null_count() > 0
    # in place, from the quantizer's file
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"mmq-ray-test-{os.getpid()}.mmq")
    q.save(path)
    try:
        got = _collect(mr.encode(ds, path, column="image", replace=True, workers=1))
    finally:
        os.remove(path)
    assert got.columns == ["id", "image"]
    assert got.get_column("image").to_list() == want.get_column("image_codes").to_list()


def test_encode_reads_rays_own_tensor_columns(cluster):
    x = np.random.default_rng(0).normal(size=(3000, 24)).astype(np.float32)
    q = mmq.PQ(m=6, k=8).fit(x)
    ds = ray.data.from_numpy(x)  # an ArrowTensorType column named "data"
    got = _collect(mr.encode(ds, q, column="data", keep=[]))
    np.testing.assert_array_equal(np.stack(got.get_column("data_codes").to_numpy()), q.encode(x))


def test_tokenize_equals_the_api(cluster, mvsa, models):
    df = mvsa.select("id", "text").with_columns(pl.when(pl.col("id") % 5 == 0).then(None).otherwise("text").alias("text"))
    ds = ray.data.from_arrow(df.to_arrow())
    opts = dict(word_ngrams=2, minn=2, maxn=4, bucket=100_003, lowercase=True, split_punct=True)
    got = _collect(mr.tokenize(ds, "text", workers=2, **opts))
    assert got.get_column("text_tokens").to_list() == mmq.tokenize(df, "text", **opts).to_list()
    clf = models[0]["text"]
    got = _collect(mr.tokenize(ds, "text", model=models[1]["text"], output="ids"))
    assert got.get_column("ids").to_list() == clf.tokenize(df).to_list()


def test_workers_use_their_cpu_allotment(cluster):
    class Threads:
        def __call__(self, batch):
            import pyarrow as pa
            from mmq import _mmq

            mr._apply_threads(None)
            return pa.table({"threads": [_mmq.get_threads()] * batch.num_rows})

    ds = ray.data.range(10).materialize()  # no read task left to compete with a 2-CPU actor
    for cpus in (1, 2):
        got = ds.map_batches(Threads, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=1),
                             num_cpus=cpus)
        assert set(_collect(got).get_column("threads").to_list()) == {cpus}


def test_sample_and_fit_quantizer_equal_the_local_fit(cluster, mvsa):
    x = mvsa.get_column("image").to_numpy()
    df = mvsa.select("id", "image")
    # different partitionings and row orders draw the same sample
    ds1 = ray.data.from_arrow(df.to_arrow()).repartition(5).materialize()
    ds2 = ray.data.from_arrow(df.reverse().to_arrow()).repartition(2).materialize()
    for n in (500, 10_000):  # fewer rows than the dataset, and more (all rows)
        want = mr.sample_local(x, n, seed=7)
        assert want.shape == (min(n, len(x)), 1280)
        np.testing.assert_array_equal(mr.sample(ds1, "image", n, seed=7), want)
        np.testing.assert_array_equal(mr.sample(ds2, "image", n, seed=7), want)
    assert not np.array_equal(mr.sample_local(x, 500, seed=8), mr.sample_local(x, 500, seed=7))
    q = mr.fit_quantizer(ds1, mmq.PQ(m=8, k=16, seed=2), "image", n=1000)
    ref = mmq.PQ(m=8, k=16, seed=2).fit(mr.sample_local(x, 1000, seed=2))
    for j in range(8):
        np.testing.assert_array_equal(q.centroids(j), ref.centroids(j))


def test_sample_is_uniform_enough(cluster):
    # keys of distinct rows behave like uniform draws: each half of the data gets its share
    x = np.arange(20_000, dtype=np.float32).reshape(-1, 2)
    s = mr.sample_local(x, 2000, seed=0)
    low = (s[:, 0] < 10_000).mean()
    assert 0.45 < low < 0.55
    assert len(np.unique(s[:, 0])) == 2000


def test_fit_ray_trains_from_codes_written_by_the_cluster(cluster, mvsa, tmp_path):
    tr = mvsa.filter(pl.col("split") == "train")
    te = mvsa.filter(pl.col("split") == "test")
    ds = ray.data.from_arrow(tr.to_arrow()).repartition(3).materialize()
    clf = mmq.Classifier(dense={"image": mmq.PQ(m=8, k=16, seed=0)}, dim=16, epoch=3, threads=1, seed=1,
                         progress=False)
    mr.fit_ray(clf, ds, tmp_path / "codes", workers=2, sample_rows=2000)
    files = list((tmp_path / "codes").glob("*.parquet"))
    assert files
    written = pl.read_parquet(files)
    assert written.columns == ["text", "label", "image"] and written.schema["image"] == pl.Array(pl.UInt8, 8)
    assert len(written) == len(tr)
    # the quantizer is the one fitted on the cluster's sample; the model predicts from floats
    ref = mmq.PQ(m=8, k=16, seed=0).fit(mr.sample_local(tr.get_column("image").to_numpy(), 2000, seed=0))
    np.testing.assert_array_equal(clf._dense["image"].centroids(0), ref.centroids(0))
    acc = (clf.predict(te).get_column("label") == te.get_column("label")).mean()
    assert acc > 0.5
    with pytest.raises(mmq.InvalidParameterError, match="not empty"):
        mr.fit_ray(clf, ds, tmp_path / "codes")
    with pytest.raises(mmq.InvalidParameterError, match="fusion='discrete'"):
        mr.fit_ray(mmq.Classifier(dense={"image": None}, fusion="gated"), ds, tmp_path / "other")


def test_a_worker_killed_mid_job_is_retried_and_the_result_is_exact(cluster, mvsa, models, tmp_path):
    clf, path = models[0]["text"], models[1]["text"]
    df = mvsa.select("id", "text")
    marker = str(tmp_path / "killed")

    class DiesOnce(mr.Predict):
        def __call__(self, batch):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer or a lost node would
            return super().__call__(batch)

    ds = ray.data.from_arrow(df.to_arrow()).repartition(4).materialize()
    out = ds.map_batches(DiesOnce, fn_constructor_kwargs={"model": path}, batch_format="pyarrow",
                         batch_size=500, compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1,
                         max_restarts=mr.RETRIES, max_task_retries=mr.RETRIES)
    got = _collect(out)
    assert os.path.exists(marker)
    assert got.get_column("id").to_list() == df.get_column("id").to_list()
    assert got.get_column("pred_label").to_list() == clf.predict(df).get_column("label").to_list()


# -- bad input: an MmqError subclass from the driver, naming the worker/batch ----------

def test_a_column_missing_in_some_blocks_names_the_column_and_worker(cluster, mvsa, models):
    clf = models[0]["text"]
    a = mvsa.head(100).select("id", "text").to_arrow()
    b = mvsa.slice(100, 100).select("id", pl.col("text").alias("body")).to_arrow()
    ds = ray.data.from_arrow([a, b])
    # (batches within blocks: when Ray merges blocks of different schemas into one batch
    # it fills the missing column with nulls itself)
    with pytest.raises(mmq.InvalidInputError, match=r"column 'text' not found in a batch of 50 rows.*worker pid"):
        _collect(mr.predict(ds, clf, workers=1, batch_size=50))


def test_a_model_file_a_worker_cannot_read(cluster, mvsa, models, tmp_path):
    df = mvsa.head(50).select("text")
    ds = ray.data.from_arrow(df.to_arrow())
    with pytest.raises(mmq.ModelFileError, match="does not exist"):
        mr.predict(ds, tmp_path / "nope.mmq")
    # readable on the driver, gone (or unreadable) on the worker: the worker's error, named
    p = tmp_path / "gone.mmq"
    models[0]["text"].save(p)
    out = mr.predict(ds, str(p), workers=1)
    os.remove(p)
    with pytest.raises(mmq.MmqError, match=r"gone\.mmq.*worker's setup; worker pid"):
        _collect(out)
    junk = tmp_path / "junk.mmq"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(mmq.ModelFileError):
        mr.predict(ds, junk)


def test_quantizer_not_fitted_and_bad_parameters(cluster, mvsa, models, tmp_path):
    ds = ray.data.from_arrow(mvsa.head(20).select("image").to_arrow())
    with pytest.raises(mmq.NotFittedError, match="not fitted"):
        mr.encode(ds, mmq.PQ(m=8))
    q = mmq.PQ(m=8, k=16).fit(mvsa.get_column("image").to_numpy())
    qp = tmp_path / "q.mmq"
    q.save(qp)
    with pytest.raises(mmq.ModelFileError, match="quantizer, not a classifier"):
        mr.predict(ds, qp)
    with pytest.raises(mmq.InvalidParameterError, match="workers"):
        mr.encode(ds, q, workers=0)
    with pytest.raises(mmq.InvalidParameterError, match="cpus_per_worker"):
        mr.encode(ds, q, cpus_per_worker=0)
    with pytest.raises(mmq.InvalidParameterError, match="k must"):
        mr.predict(ds, models[0]["text"], k=0)
    with pytest.raises(mmq.InvalidParameterError, match="ray.data.Dataset"):
        mr.predict(mvsa, models[0]["text"])
    with pytest.raises(mmq.InvalidParameterError, match="sample size"):
        mr.sample(ds, "image", 0)
    with pytest.raises(mmq.InvalidParameterError):
        mr.tokenize(ds, "text", word_ngrams=0)
    with pytest.raises(mmq.InvalidInputError, match=r"output column 'image' is already a column"):
        _collect(mr.encode(ds, q, column="image", output="image"))
    # a vector of the wrong length in a batch
    bad = ray.data.from_arrow(pl.DataFrame({"image": pl.Series([[1.0, 2.0]] * 3, dtype=pl.Array(pl.Float32, 2))}).to_arrow())
    with pytest.raises(mmq.InvalidInputError, match="expected vectors of dimension 1280, got 2"):
        _collect(mr.encode(bad, q))


def test_an_unsupported_ray_version_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(ray, "__version__", "1.13.0")
    with pytest.raises(mmq.errors.DependencyError, match=r"supports Ray 2\.40 <= version < 3\.0; found ray 1\.13"):
        mr._ray()
    assert issubclass(mmq.errors.DependencyError, ImportError)


def test_callables_pickle(models):
    f = mr.Predict(models[1]["text"], k=2)
    g = pickle.loads(pickle.dumps(f))
    assert g.k == 2 and g.model.labels == f.model.labels
