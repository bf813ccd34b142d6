"""lth.reproduce: job scheduling (sources before branches, failures kept apart), the study frame, results pages."""

import pytest

from lth import reproduce
from lth.reproduce import Job, run_jobs, write_page


def _fake_run(calls, fail=()):
    def run_one(overrides, folder):
        calls.append((folder.rsplit("/", 1)[-1], list(overrides)))
        return ("RuntimeError: boom", 0.0) if any(folder.endswith(f) for f in fail) else (None, 0.0)
    return run_one


def test_branches_run_after_their_sources_and_every_job_pins_one_thread(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(reproduce, "_run_one", _fake_run(calls))
    jobs = [Job("b", ("x=2",), after=("a",)), Job("c", ("x=3",), after=("b",)), Job("a", ("x=1",))]
    run_jobs(jobs, tmp_path, common=("experiment=smoke",), workers=1, log=lambda s: None)
    assert [c[0] for c in calls] == ["a", "b", "c"]
    assert calls[0][1] == ["experiment=smoke", "x=1", "trainer.threads=1"]


def test_a_failed_source_fails_its_branches_but_not_the_others(tmp_path, monkeypatch):
    calls, lines = [], []
    monkeypatch.setattr(reproduce, "_run_one", _fake_run(calls, fail=("/a",)))
    jobs = [Job("a", ()), Job("a_branch", (), after=("a",)), Job("other", ())]
    with pytest.raises(RuntimeError, match=r"2 of 3 lineages failed: .*a: RuntimeError: boom; a_branch: its source"):
        run_jobs(jobs, tmp_path, workers=1, log=lines.append)
    assert [c[0] for c in calls] == ["a", "other"]  # the branch never ran; the independent job did


def test_bad_studies_are_refused_before_running(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(reproduce, "_run_one", _fake_run(calls))
    with pytest.raises(ValueError, match="share a folder"):
        run_jobs([Job("a", ()), Job("a", ("x=1",))], tmp_path, workers=1)
    with pytest.raises(ValueError, match=r"wait for folders no job writes: \['z'\]"):
        run_jobs([Job("a", (), after=("z",))], tmp_path, workers=1)
    with pytest.raises(ValueError, match="cycle"):
        run_jobs([Job("a", (), after=("b",)), Job("b", (), after=("a",))], tmp_path, workers=1)
    assert calls == []


def test_worker_processes_run_real_lineages(tmp_path, data_root):
    jobs = [Job(f"s{s}", (f"seed={s}",), {"seed": s}) for s in (0, 1)]
    run_jobs(jobs, tmp_path, common=("experiment=smoke", f"data.root={data_root}", "ticket.rounds=0",
                                     "trainer.max_steps=5", "trainer.eval_every=5"), workers=2, log=lambda s: None)
    df = reproduce.frame(jobs, tmp_path)
    assert list(df["seed"]) == [0, 1] and list(df["round"]) == [0, 0] and list(df["folder"]) == ["s0", "s1"]
    assert df["test_acc"].iloc[0] != df["test_acc"].iloc[1]
    assert "threads: 1" in (tmp_path / "s0" / "config.yaml").read_text()


def test_results_page_regenerates_only_between_its_markers(tmp_path):
    page = tmp_path / "p.md"
    write_page(page, "Title", "table v1")
    assert page.read_text() == "# Title\n\n<!-- results:start -->\ntable v1\n<!-- results:end -->\n"
    page.write_text(page.read_text() + "\n## Reading\n\nHand-written.\n")
    write_page(page, "Title", "table v2")
    text = page.read_text()
    assert "table v2" in text and "table v1" not in text and text.endswith("## Reading\n\nHand-written.\n")
    other = tmp_path / "other.md"
    other.write_text("someone's notes")
    with pytest.raises(ValueError, match="without results markers: refusing to overwrite"):
        write_page(other, "Title", "x")
    assert other.read_text() == "someone's notes"
