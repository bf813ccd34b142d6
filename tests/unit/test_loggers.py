"""lth.loggers.SafeLogger: forwards to the wrapped logger; its failures warn once per method and never raise."""

import warnings

import pytest
from pytorch_lightning.loggers import Logger

from lth.loggers import SafeLogger


class Recorder(Logger):
    def __init__(self, fail=()):
        super().__init__()
        self.fail = set(fail)
        self.calls = []

    @property
    def name(self):
        return "rec"

    @property
    def version(self):
        return 7

    def _maybe_fail(self, method, *args):
        self.calls.append((method, *args))
        if method in self.fail:
            raise ConnectionError("offline")

    def log_metrics(self, metrics, step=None):
        self._maybe_fail("log_metrics", metrics, step)

    def log_hyperparams(self, params, *args, **kwargs):
        self._maybe_fail("log_hyperparams", params)

    def finalize(self, status):
        self._maybe_fail("finalize", status)


def test_forwards_calls_and_properties():
    inner = Recorder()
    safe = SafeLogger(inner)
    safe.log_metrics({"acc": 0.5}, step=3)
    safe.log_hyperparams({"lr": 0.1})
    safe.finalize("success")
    assert inner.calls == [("log_metrics", {"acc": 0.5}, 3), ("log_hyperparams", {"lr": 0.1}),
                           ("finalize", "success")]
    assert (safe.name, safe.version) == ("rec", 7)
    assert safe.failures == {}


def test_a_failing_call_warns_once_and_is_counted():
    inner = Recorder(fail={"log_metrics"})
    safe = SafeLogger(inner)
    with pytest.warns(RuntimeWarning, match=r"logger Recorder failed in log_metrics \(ConnectionError: offline\)"):
        safe.log_metrics({"acc": 0.5}, step=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second and third failures are silent
        safe.log_metrics({"acc": 0.6}, step=1)
        safe.log_metrics({"acc": 0.7}, step=2)
        safe.finalize("success")  # a method that works is still forwarded
    assert safe.failures == {"log_metrics": 3}
    assert [c[0] for c in inner.calls] == ["log_metrics"] * 3 + ["finalize"]


def test_each_method_warns_on_its_own_first_failure():
    safe = SafeLogger(Recorder(fail={"log_metrics", "finalize"}))
    with pytest.warns(RuntimeWarning) as caught:
        safe.log_metrics({"a": 1.0})
        safe.finalize("failed")
    assert ["log_metrics" in str(w.message) for w in caught] == [True, False]
    assert safe.failures == {"log_metrics": 1, "finalize": 1}


# ----- the W&B mirror's start-up: group, name and job_type of a lineage's run
def test_the_wandb_run_is_grouped_named_and_typed_by_its_kind(tmp_path, smoke_config):
    from lth.loggers import wandb_sinks

    cfg = smoke_config("logger=wandb", "logger.run_name='rewind/large_final/seed=0'", "logger.sync_hook=true",
                       f"logger.sync_dir={tmp_path / 'osh'}")
    for kind in ("lineage", "branch", "instability"):  # any registered kind's name, with no edit here
        (sink,) = wandb_sinks(cfg, tmp_path / kind, {}, kind)
        init = sink._init
        assert (init["group"], init["job_type"], init["name"]) == ("smoke", kind, "rewind/large_final/seed=0")
        assert sink.sync is not None and sink.sync.hook.communication_dir == tmp_path / "osh"
    cfg.logger.group = "mine"
    assert wandb_sinks(cfg, tmp_path / "x", {}, "lineage")[0]._init["group"] == "mine"
