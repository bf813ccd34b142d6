"""`lth-dashboard`: a saved W&B workspace for an lth project (sections Tickets, Training, Masks, Runs), built with
wandb-workspaces from the metric names the W&B logger writes (`lth.metrics`); saving it again updates the same view."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lth.early_stop import EARLY_STOP_RULES, by_rule_fields
from lth.metrics import (
    COMPRESSION,
    CURVE_STEP,
    CURVES,
    DEFAULT_GROUPING,
    DENSITY,
    EARLY_STOP_STEP,
    EARLY_STOP_TEST_ACC,
    LAYER_DENSITY,
    MASK_OVERLAP,
    ROUND,
    ROUND_TABLE,
    TEST_ACC,
    TICKET_METRICS,
    grouping_keys,
    layer_density_key,
)

SECTIONS = ("Tickets", "Training", "Masks", "Runs")
X_AXES = {  # the ticket plots' x axis: W&B line plots cannot reverse an axis; compression = 1/density is reversed
    COMPRESSION: "compression = 1 / density (log): 1 = dense, 10 = 10% of weights remaining",
    DENSITY: "density: fraction of weights remaining (log)",
}
TITLES = {TEST_ACC: "test accuracy, end of training",
          EARLY_STOP_TEST_ACC: "test accuracy at the early-stop step (trainer.early_stop_metric)",
          EARLY_STOP_STEP: "early-stop step (trainer.early_stop_metric)",
          **{by_rule_fields(name)[1]: f"test accuracy at the {EARLY_STOP_RULES[name].words}"
             for name in EARLY_STOP_RULES}}
LAYER_DENSITY_REGEX = f"^{layer_density_key('')}.*"
RUN_GROUP = "Group"  # W&B's run group (the experiment name): the one line of a group whose lineages differ by seed only
MAX_RUNS = 200  # runs drawn per plot (W&B's default, 10, would drop most of a sweep)


class DashboardError(Exception):
    """A problem `lth-dashboard` reports in one line (no network, no API key, unknown project, bad option)."""


@dataclass
class Layout:
    """What the workspace shows: the runs' group (None: the whole project), the config keys that make lines (seeds
    averaged), the ticket plots' x axis, and whether the runs log a mask overlap."""

    group: str | None = None
    group_by: tuple[str, ...] = DEFAULT_GROUPING
    x: str = COMPRESSION
    mask_overlap: bool = False


def view_name(entity: str, project: str, group: str | None) -> str:
    """The workspace's fixed W&B view name for (entity, project, group): saving again updates that view."""
    digest = hashlib.sha1(f"{entity}/{project}/{group or ''}".encode()).hexdigest()[:8]
    return f"nw-lth{digest}-v"


def display_name(project: str, group: str | None) -> str:
    """The workspace's title in the W&B app."""
    return f"lth: {group}" if group else f"lth: {project}"


def _line(x: str, metric: str, title: str, log_x: bool = True, **extra: Any) -> Any:
    import wandb_workspaces.reports.v2 as wr

    return wr.LinePlot(title=title, x=x, y=[metric], log_x=log_x, title_x=X_AXES.get(x, x), title_y=metric, **extra)


def workspace(entity: str, project: str, layout: Layout) -> Any:
    """The lottery-ticket workspace (a `wandb_workspaces.workspaces.Workspace`; nothing is sent anywhere)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    if layout.x not in X_AXES:
        raise DashboardError(f"x axis must be one of {', '.join(X_AXES)}, got {layout.x!r}")
    mean = {"aggregate": True, "groupby_aggfunc": "mean", "groupby_rangefunc": "stddev"}
    tickets = [_line(layout.x, m, f"{TITLES[m]} vs weights remaining (mean ± std over seeds)", **mean)
               for m in (*TICKET_METRICS, *(by_rule_fields(name)[1] for name in EARLY_STOP_RULES))]
    training = [_line(CURVE_STEP, c, f"{c} (all rounds, cumulative steps)", log_x=False) for c in CURVES]
    masks = [_line(ROUND, DENSITY, "density per round", log_x=False, log_y=True),
             wr.LinePlot(title="per-layer density per round", x=ROUND, metric_regex=LAYER_DENSITY_REGEX, log_y=True,
                         title_x=ROUND, title_y=LAYER_DENSITY)]
    if layout.mask_overlap:
        masks.append(_line(ROUND, MASK_OVERLAP, "mask overlap with the source mask", log_x=False))
    runs = [wr.WeavePanelSummaryTable(table_name=ROUND_TABLE, layout=wr.Layout(w=24, h=10)),
            wr.RunComparer(diff_only="split", layout=wr.Layout(w=24, h=10))]
    groupby = [ws.Config(k) for k in layout.group_by] or [ws.Metric(RUN_GROUP)]
    return ws.Workspace(
        entity=entity, project=project, name=display_name(project, layout.group),
        sections=[ws.Section(name=name, panels=panels, is_open=True)
                  for name, panels in zip(SECTIONS, (tickets, training, masks, runs))],
        settings=ws.WorkspaceSettings(max_runs=MAX_RUNS),
        runset_settings=ws.RunsetSettings(
            filters=[ws.Metric(RUN_GROUP) == layout.group] if layout.group else "",
            groupby=groupby,
            pinned_columns=["run:displayName", "run:jobType",
                            *(f"summary:{m}" for m in (DENSITY, TEST_ACC, EARLY_STOP_TEST_ACC))]),
    )


def panel_metrics(ws_: Any) -> Iterator[tuple[str, str, str]]:
    """(section, panel title, what it reads) for every metric a panel reads: x and y keys, `re:<regex>` for a
    metric regex, `table:<key>` for a logged table."""
    for section in ws_.sections:
        for panel in section.panels:
            title = getattr(panel, "title", None) or type(panel).__name__
            if hasattr(panel, "table_name"):
                yield section.name, title, f"table:{panel.table_name}"
            if getattr(panel, "x", None) is not None:
                yield section.name, title, str(panel.x)
            for y in getattr(panel, "y", None) or []:
                yield section.name, title, str(y)
            if getattr(panel, "metric_regex", None):
                yield section.name, title, f"re:{panel.metric_regex}"


def spec(ws_: Any, view: str) -> dict[str, Any]:
    """The workspace as the JSON W&B stores (its view name, title, entity, project and spec)."""
    model = ws_._to_model()
    return {"view": view, "name": ws_.name, "entity": ws_.entity, "project": ws_.project,
            "spec": json.loads(model.spec.model_dump_json(by_alias=True, exclude_none=True))}


# ----- what the runs hold: grouping keys from local results or from the W&B project

def layout_from_results(path: str | os.PathLike, group: str | None = None) -> Layout:
    """The layout a results folder asks for: its lineages' varying config keys (seeds averaged), its experiment name
    as the group (when the folder holds one), a mask-overlap panel when it holds branches."""
    import yaml

    from lth.analysis import lineage_folders

    configs, branches = [], False
    for folder in lineage_folders(path):
        cfg_file = folder / "config.yaml"
        config = (yaml.safe_load(cfg_file.read_text()) or {}) if cfg_file.exists() else {}
        configs.append(config)
        branches |= bool((config.get("branch") or {}).get("from"))
    if not configs:
        raise DashboardError(f"no lineage (rounds.jsonl) under {path}")
    names = {c.get("name") for c in configs}
    return Layout(group=group or (names.pop() if len(names) == 1 else None), group_by=tuple(grouping_keys(configs)),
                  mask_overlap=branches)


def layout_from_wandb(api: Any, entity: str, project: str, group: str | None) -> Layout:
    """The layout of the runs already in a W&B project (its group only, when given), by the same rule."""
    filters = {"group": group} if group else {}
    runs = list(api.runs(f"{entity}/{project}", filters=filters))
    if not runs:
        return Layout(group=group)
    configs = [{k: v for k, v in dict(r.config).items() if not k.startswith("_")} for r in runs]
    overlap = any(MASK_OVERLAP in dict(r.summary) for r in runs)
    return Layout(group=group, group_by=tuple(grouping_keys(configs)), mask_overlap=overlap)


# ----- saving

def connect() -> Any:
    """A W&B API client that has reached the server, or DashboardError saying why not (no key, no network)."""
    import wandb

    try:
        api = wandb.Api(timeout=20)
        api.viewer  # noqa: B018  a request: fails here without network or with a key the server refuses
    except wandb.errors.UsageError as e:
        raise DashboardError(f"no W&B API key ({e}): run `wandb login` or set WANDB_API_KEY; --dry-run prints the "
                             "workspace without one") from None
    except Exception as e:  # noqa: BLE001  every failure to reach the server ends in the same advice
        raise DashboardError(f"cannot reach W&B ({type(e).__name__}: {e}); saving a workspace needs the network and "
                             "a valid API key; --dry-run prints the workspace without either") from None
    return api


def existing_view_id(entity: str, project: str, view: str) -> str:
    """The id of the saved view `view`, or "" when the project has none by that name."""
    from wandb_workspaces.workspaces import internal

    try:
        return internal.View.from_name(entity, project, view).id
    except ValueError as e:
        if "Workspace" in str(e) and "not found" in str(e):
            return ""
        raise DashboardError(str(e)) from None


def save(ws_: Any, view: str) -> Any:
    """Create the view `view`, or update it in place when it exists (its sections replaced, never duplicated)."""
    ws_._internal_name = view
    ws_._internal_id = existing_view_id(ws_.entity, ws_.project, view)
    return ws_.save()


# ----- the command

def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="lth-dashboard",
        description="Create or update the lottery-ticket workspace of a W&B project: Tickets (accuracy and early "
                    "stop vs weights remaining, one line per group of varying config keys, seeds averaged), "
                    "Training, Masks, Runs. Running it again updates the same workspace.",
        epilog="examples:\n  lth-dashboard --results runs/lth_mnist1d --dry-run\n"
               "  lth-dashboard --entity my-team --project lth --group lth_mnist1d",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entity", default=os.environ.get("WANDB_ENTITY"),
                    help="W&B entity (user or team; default $WANDB_ENTITY, else the API key's default entity)")
    ap.add_argument("--project", default=os.environ.get("WANDB_PROJECT", "lth"),
                    help="W&B project (default $WANDB_PROJECT, else lth: logger.project's default)")
    ap.add_argument("--group", default=None,
                    help="only the runs of this group (an experiment name; default: the --results folder's, or all)")
    ap.add_argument("--results", default=None, metavar="FOLDER",
                    help="a local results folder (a lineage or a sweep): the grouping keys are read from it")
    ap.add_argument("--group-by", nargs="+", default=None, metavar="KEY",
                    help="config keys that make the lines (default: those that vary between the runs, seeds, "
                         "names and paths left out, as in lth.analysis)")
    ap.add_argument("--x", choices=list(X_AXES), default=COMPRESSION,
                    help="x axis of the ticket plots (log): compression = 1/density, i.e. density reversed "
                         "(default), or density")
    ap.add_argument("--mask-overlap", action="store_true", help="add the mask-overlap panel (default: when the runs "
                                                                  "log one)")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the workspace as JSON instead of saving it (no network or account needed)")
    ap.add_argument("--out", default=None, metavar="FILE", help="with --dry-run: write the JSON to FILE")
    return ap


def run(args: argparse.Namespace) -> str:
    """Build (and unless --dry-run save) the workspace; returns what to print."""
    api = None if args.dry_run else connect()
    entity = args.entity or (api.default_entity if api is not None else None) or ""
    if not args.dry_run and not entity:
        raise DashboardError("no W&B entity: pass --entity or set WANDB_ENTITY")
    if args.results:
        try:
            layout = layout_from_results(args.results, args.group)
        except FileNotFoundError as e:
            raise DashboardError(str(e)) from None
    elif api is not None:
        try:
            layout = layout_from_wandb(api, entity, args.project, args.group)
        except Exception as e:  # noqa: BLE001  an unknown entity or project, a dropped connection
            raise DashboardError(f"could not read the runs of {entity}/{args.project} ({type(e).__name__}: {e})") \
                from None
    else:
        layout = Layout(group=args.group)
    if args.group_by is not None:
        layout.group_by = tuple(args.group_by)
    layout.x = args.x
    layout.mask_overlap |= args.mask_overlap
    ws_ = workspace(entity, args.project, layout)
    view = view_name(entity, args.project, layout.group)
    if args.dry_run:
        text = json.dumps(spec(ws_, view), indent=1, sort_keys=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text + "\n")
            return f"workspace {ws_.name!r} (lines: {', '.join(layout.group_by) or RUN_GROUP}) written to {args.out}"
        return text
    try:
        saved = save(ws_, view)
    except DashboardError:
        raise
    except Exception as e:  # noqa: BLE001  the server refused or the connection dropped
        raise DashboardError(f"W&B did not save the workspace ({type(e).__name__}: {e})") from None
    return f"workspace {ws_.name!r} saved: {saved.url}"


def main(argv: Sequence[str] | None = None) -> None:
    """`lth-dashboard [--entity E] [--project P] [--group G] [--results FOLDER] [--dry-run]`."""
    args = _parser().parse_args(argv)
    if args.out and not args.dry_run:
        _parser().error("--out goes with --dry-run")
    try:
        print(run(args))
    except DashboardError as e:
        print(f"lth-dashboard: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None

