"""lth-dashboard: the workspace is built offline from lth.metrics, and every panel reads a key the W&B logger writes
(read back from offline runs made here); saving updates one view; no network or key is one clear error."""

import json
import re
import types
from pathlib import Path

import pytest
import yaml

from lth import dashboard
from lth.dashboard import SECTIONS, DashboardError, Layout, layout_from_results, layout_from_wandb, panel_metrics
from lth.masks import load, random_masks_like, save
from lth.wandb_sink import WandbSink
from tests.wandb_reader import _typed_records, read_history


@pytest.fixture(scope="module")
def offline(tmp_path_factory, data_root):
    """A smoke lineage logged to an offline W&B run (sync hook on), and a branch of its round 1 with a random mask
    mirrored by the same logger: their .wandb files, folders and the hook's folder."""
    from lth.cli import compose_config
    from lth.runner import run

    root = tmp_path_factory.mktemp("offline")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_DIR", str(root / "wb"))
        mp.setenv("WANDB_MODE", "offline")
        lineage = root / "runs" / "smoke" / "defaults"
        cfg = compose_config(["experiment=smoke", f"data.root={data_root}", "logger=wandb", "trainer.max_steps=10",
                              "trainer.eval_every=5", "trainer.log_every_n_steps=5", "logger.sync_hook=true",
                              f"logger.sync_dir={root / 'osh'}"])
        records = run(cfg, lineage)
        branch = root / "runs" / "smoke" / "branch"
        (branch / "round_01").mkdir(parents=True)
        save(random_masks_like(load(lineage / "round_01" / "mask.pt"), seed=3), branch / "round_01" / "mask.pt")
        sink = WandbSink(branch, {"name": "smoke"}, group="smoke", job_type="branch", log_masks=False)
        sink.on_round({**records[1], "branch_from": str(lineage), "branch_round": 1})
        sink.close()
    files = {p.parent.name: p for p in (root / "wb").rglob("run-*.wandb")}
    assert len(files) == 2
    return types.SimpleNamespace(root=root, lineage=lineage, branch=branch, records=records, files=files)


def _runs(offline):
    """job_type → (run record, history rows) of each offline run."""
    out = {}
    for path in offline.files.values():
        (meta, *_) = _typed_records(path, "run")
        out[meta.job_type] = (meta, read_history(path))
    return out


def _keys(offline):
    return {k for _, history in _runs(offline).values() for row in history for k in row}


@pytest.mark.parametrize("x", ["compression", "density"])
def test_every_panel_reads_a_key_the_logger_writes(offline, x):
    keys = _keys(offline)
    ws = dashboard.workspace("team", "lth", Layout(group="smoke", x=x, mask_overlap=True))
    assert [s.name for s in ws.sections] == list(SECTIONS)
    read = list(panel_metrics(ws))
    # (x, y) of 5 ticket panels (3 + early-stop test accuracy under each rule), 6 curves, density, layer densities,
    # overlap; the round table
    assert len(read) == 29
    for section, title, what in read:
        if what.startswith("re:"):
            assert any(re.search(what[3:], k) for k in keys), (section, title, what)
        elif what.startswith("table:"):
            assert f"{what[6:]}/nrows" in keys, (section, title, what)
        else:
            assert what in keys, (section, title, what)
    assert {w for s, _, w in read if s == "Tickets"} == {x, "test_acc", "early_stop_test_acc", "early_stop_step",
                                                         "early_stop_by_val_loss_test_acc",
                                                         "early_stop_by_val_acc_test_acc"}


def test_the_logger_writes_compression_mask_overlap_group_and_job_type(offline):
    runs = _runs(offline)
    assert set(runs) == {"lineage", "branch"}  # job_type: the experiment kind
    meta, history = runs["lineage"]
    assert meta.run_group == "smoke"
    rows = [h for h in history if "round" in h]
    assert [(h["round"], h["density"], h["compression"]) for h in rows] == [(0, 1.0, 1.0), (1, 0.5, 2.0)]
    assert all("mask_overlap" not in h for h in history)  # a lineage's round has no source mask
    _, history = runs["branch"]
    (row,) = [h for h in history if "round" in h]
    kept, source = load(offline.branch / "round_01" / "mask.pt"), load(offline.lineage / "round_01" / "mask.pt")
    both = sum(int((kept[n] & source[n]).sum()) for n in kept)
    assert row["mask_overlap"] == both / sum(int(m.sum()) for m in kept.values())
    assert 0.3 < row["mask_overlap"] < 0.7  # a random mask at density 0.5 shares about half of the kept weights


def test_the_sync_hook_names_the_offline_run_folder(offline):
    commands = list((offline.root / "osh").glob("*.command"))
    assert len(commands) == 1  # one request per run, renewed after every round and at the end
    folder = Path(commands[0].read_text())
    assert folder == offline.files[folder.name].parent and folder.name.startswith("offline-run-")


def _results(root, configs):
    root.mkdir(parents=True, exist_ok=True)
    for i, cfg in enumerate(configs):
        folder = root / f"job{i}"
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
        (folder / "rounds.jsonl").write_text("")
    return root


SWEEP = [{"name": "sweep", "seed": s, "ticket": {"reset": r}, "pruning": {"criterion": "large_final"},
          "branch": {"from": None}, "logger": {"run_name": f"{r}/{s}"}} for r in ("rewind", "reshuffle") for s in (0, 1)]


def test_layout_from_a_results_folder(tmp_path):
    layout = layout_from_results(_results(tmp_path / "a", SWEEP))
    assert (layout.group, layout.group_by, layout.mask_overlap) == ("sweep", ("ticket.reset",), False)
    branch = {**SWEEP[0], "name": "other", "branch": {"from": "runs/sweep/job0"}}
    layout = layout_from_results(_results(tmp_path / "b", [*SWEEP, branch]))
    assert (layout.group, layout.mask_overlap) == (None, True)  # two experiment names: no group filter
    assert layout_from_results(tmp_path / "a", group="mine").group == "mine"
    with pytest.raises(DashboardError, match="no lineage"):
        layout_from_results(_results(tmp_path / "c", []))


def test_layout_from_the_runs_in_wandb():
    runs = [types.SimpleNamespace(config={"_wandb": {}, **c}, summary={"density": 0.5}) for c in SWEEP]
    calls = []
    api = types.SimpleNamespace(runs=lambda path, filters: calls.append((path, filters)) or runs)
    layout = layout_from_wandb(api, "team", "lth", "sweep")
    assert calls == [("team/lth", {"group": "sweep"})]
    assert (layout.group_by, layout.mask_overlap) == (("ticket.reset",), False)
    runs[0].summary["mask_overlap"] = 1.0
    assert layout_from_wandb(api, "team", "lth", None).mask_overlap


def test_grouping_goes_to_the_runset_and_one_group_line_when_nothing_varies():
    spec = dashboard.spec(dashboard.workspace("team", "lth", Layout(group="sweep", group_by=("ticket.reset",))), "v")
    (runset,) = spec["spec"]["section"]["runSets"]
    assert runset["grouping"] == [{"name": "ticket.value.reset", "section": "config"}]
    assert runset["filters"]["filters"][0]["key"] == {"name": "group", "section": "run"}
    assert runset["filters"]["filters"][0]["value"] == "sweep"
    spec = dashboard.spec(dashboard.workspace("team", "lth", Layout(group_by=())), "v")
    assert spec["spec"]["section"]["runSets"][0]["grouping"] == [{"name": "group", "section": "run"}]
    ticket = spec["spec"]["section"]["panelBankConfig"]["sections"][0]["panels"][0]["config"]
    assert (ticket["xAxis"], ticket["xLogScale"], ticket["groupAgg"], ticket["groupArea"]) == (
        "compression", True, "mean", "stddev")


class FakeServer:
    """Stands in for W&B's views: upsert by id (update) or without (a new view, even under a taken name)."""

    def __init__(self):
        self.views: list[dict] = []

    def upsert(self, view):
        if view.id:
            (found,) = [v for v in self.views if v["id"] == view.id]
        else:
            found = {"id": f"id{len(self.views)}"}
            self.views.append(found)
        found.update(name=view.name, display=view.display_name, spec=json.loads(view.spec.model_dump_json(
            by_alias=True, exclude_none=True)))
        return {"upsertView": {"view": {"id": found["id"], "name": view.name}, "inserted": not view.id}}

    def from_name(self, entity, project, name):
        for v in self.views:
            if v["name"] == name:
                return types.SimpleNamespace(id=v["id"])
        raise ValueError(f"Workspace `{name}` not found in project `{project}`")


def test_saving_twice_updates_one_view(monkeypatch):
    from wandb_workspaces.workspaces import interface, internal

    server = FakeServer()
    monkeypatch.setattr(internal, "upsert_view2", server.upsert)
    monkeypatch.setattr(internal.View, "from_name", classmethod(lambda cls, *a: server.from_name(*a)))
    monkeypatch.setattr(interface, "get_app_url", lambda api: "https://wandb.example")
    monkeypatch.setattr(interface.wandb, "Api", lambda *a, **k: None)
    view = dashboard.view_name("team", "lth", "sweep")
    for _ in range(2):
        saved = dashboard.save(dashboard.workspace("team", "lth", Layout(group="sweep")), view)
    assert len(server.views) == 1 and server.views[0]["name"] == view
    assert [s["name"] for s in server.views[0]["spec"]["section"]["panelBankConfig"]["sections"]] == list(SECTIONS)
    assert saved.url == f"https://wandb.example/team/lth?nw={view[3:-2]}"
    assert dashboard.view_name("team", "lth", "other") != view


def test_dry_run_prints_the_workspace(tmp_path, capsys):
    dashboard.main(["--dry-run", "--results", str(_results(tmp_path / "r", SWEEP)), "--entity", "team"])
    spec = json.loads(capsys.readouterr().out)
    assert (spec["name"], spec["entity"], spec["project"]) == ("lth: sweep", "team", "lth")
    sections = spec["spec"]["section"]["panelBankConfig"]["sections"]
    assert [s["name"] for s in sections] == list(SECTIONS)
    out = tmp_path / "ws.json"
    dashboard.main(["--dry-run", "--group-by", "pruning.criterion", "--x", "density", "--out", str(out)])
    assert "written to" in capsys.readouterr().out
    spec = json.loads(out.read_text())
    assert spec["spec"]["section"]["runSets"][0]["grouping"] == [{"name": "pruning.value.criterion",
                                                                  "section": "config"}]


def test_without_an_api_key_saving_is_one_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    with pytest.raises(SystemExit) as e:
        dashboard.main(["--entity", "team", "--project", "lth"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lth-dashboard: error: no W&B API key") and "--dry-run" in err[0]


def test_without_network_saving_is_one_error(monkeypatch, capsys):
    import wandb

    class Offline:
        def __init__(self, *a, **k):
            raise wandb.errors.CommError("Failed to connect: Name or service not known")

    monkeypatch.setattr(wandb, "Api", Offline)
    with pytest.raises(SystemExit):
        dashboard.main(["--entity", "team"])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("lth-dashboard: error: cannot reach W&B (CommError: Failed to connect")
