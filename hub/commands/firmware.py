"""``sipas-hub terminals update`` and ``sipas-hub terminals rollouts [ID | cancel ID]``:
over-the-air updates.

They talk to the running hub through its API (the rollout runs inside the hub, which hears the
terminals' replies and heartbeats, and a cancel must reach that running rollout): the address is
``SIPAS_HUB_API_HOST``/``SIPAS_HUB_API_PORT`` (``0.0.0.0`` is reached at 127.0.0.1), the token
``SIPAS_HUB_API_TOKEN``, from the same settings as the hub (/etc/sipas/hub.env).
"""

from __future__ import annotations

import getpass
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from hub import firmware
from hub.config import Settings
from hub.office import OFFICE_TZ

out = Console()
err = Console(stderr=True)

EXIT_OK = 0
EXIT_STOPPED = 1  # the rollout stopped (a terminal failed), was cancelled or was interrupted
EXIT_USAGE = 2  # bad bundle, usage or settings
EXIT_HUB = 3  # the hub's API could not be reached or refused the request
EXIT_BUSY = 4  # another rollout is running
EXIT_ENDED = 5  # cancel: the rollout had already ended (or was already being cancelled)

EXIT_CODES = (
    "Exit codes: 0 every terminal runs the version; 1 the rollout stopped (the reason is shown), "
    "was cancelled or was interrupted; 2 bad bundle, usage or settings; 3 the hub's API is "
    "unreachable or refused; 4 another rollout is running."
)
CANCEL_EXIT_CODES = (
    "Exit codes: 0 cancelled (or, with --no-wait, cancelling); 2 no such rollout, or bad "
    "settings; 3 the hub's API is unreachable or refused; 5 nothing to cancel: the rollout had "
    "already ended or was already being cancelled."
)
_FINAL = {"updated", "skipped", "failed", "not_started", "interrupted"}
_UPDATING = ("sent", "staged", "trial")  # a terminal in the middle of its update
_GOING_ON = ("running", "cancelling")  # rollout states that still change


def _api_base(settings: Settings) -> str:
    host = settings.api_host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port}/api/v1"


def _client(settings: Settings, timeout: float = 30) -> httpx.Client:
    if not settings.api_token:
        err.print("[red]SIPAS_HUB_API_TOKEN is not set:[/] run this with the hub's settings")
        raise typer.Exit(EXIT_USAGE)
    return httpx.Client(
        base_url=_api_base(settings),
        headers={
            "Authorization": f"Bearer {settings.api_token}",
            "X-SIPAS-Actor": f"cli:{getpass.getuser()}"[:64],
        },
        timeout=timeout,
    )


def _settings() -> Settings:
    from hub.commands.broker import load_settings

    try:
        return load_settings()
    except Exception as e:
        err.print(f"[red]configuration error:[/] {e}")
        raise typer.Exit(EXIT_USAGE) from e


def _call(c: httpx.Client, method: str, url: str, **kw: Any) -> httpx.Response:
    try:
        return c.request(method, url, **kw)
    except httpx.HTTPError as e:
        err.print(
            f"[red]cannot reach the hub's API at {c.base_url}:[/] {e}. "
            "Is the hub running (systemctl status sipas-hub)?"
        )
        raise typer.Exit(EXIT_HUB) from e


def _detail(r: httpx.Response) -> str:
    try:
        d = r.json().get("detail")
    except (ValueError, AttributeError):
        d = None
    if isinstance(d, list):  # FastAPI's validation errors
        d = "; ".join(str(x.get("msg", x)) for x in d if isinstance(x, dict))
    return str(d or r.text or r.status_code)


def update(
    bundle_dir: Path = typer.Argument(..., help="the bundle folder (sipas-provision build)"),
    terminal: str | None = typer.Option(None, "--terminal", help="one terminal"),
    desk: str | None = typer.Option(None, "--desk", help="every active terminal on this desk"),
    all_: bool = typer.Option(False, "--all", help="every active terminal of the office"),
    timeout: float | None = typer.Option(
        None, "--timeout", min=1, help="seconds to wait for each terminal (hub default: 600)"
    ),
    allow_downgrade: bool = typer.Option(
        False,
        "--allow-downgrade",
        help="roll back to an older version on purpose (a bad release): signed into "
        "each command, so it cannot be added to a replayed one",
    ),
) -> None:
    """Update terminals over the air, one at a time; stops at the first that does not come back
    on the new version. A terminal refuses a version older than (or the same as) the one it runs
    unless --allow-downgrade is given."""
    if sum((terminal is not None, desk is not None, all_)) != 1:
        err.print("[red]give exactly one of --terminal T, --desk D, --all[/]")
        raise typer.Exit(EXIT_USAGE)
    try:
        bundle = firmware.load_bundle(bundle_dir)
    except (firmware.BundleError, OSError) as e:
        err.print(f"[red]bad bundle:[/] {e}")
        raise typer.Exit(EXIT_USAGE) from e
    settings = _settings()
    with _client(settings) as c:
        r = _call(
            c,
            "POST",
            "/firmware",
            content=firmware.pack_bundle(bundle),
            headers={"Content-Type": "application/gzip"},
        )
        if r.status_code == 409:
            err.print(f"[red]{_detail(r)}[/]")
            raise typer.Exit(EXIT_USAGE)
        if r.status_code == 422:
            err.print(f"[red]the hub refused the bundle:[/] {_detail(r)}")
            raise typer.Exit(EXIT_USAGE)
        if r.status_code not in (200, 201):
            err.print(f"[red]upload failed ({r.status_code}):[/] {_detail(r)}")
            raise typer.Exit(EXIT_HUB)
        what = "imported" if r.status_code == 201 else "already on the hub"
        err.print(f"version {bundle.version} {what}")
        body: dict[str, Any] = {"version": bundle.version, "timeout_s": timeout}
        if allow_downgrade:
            body["allow_downgrade"] = True
        if terminal is not None:
            body["terminal"] = terminal
        elif desk is not None:
            body["desk"] = desk
        else:
            body["all"] = True
        r = _call(c, "POST", "/rollouts", json=body)
        if r.status_code == 409:
            err.print(f"[red]{_detail(r)}[/] (sipas-hub terminals rollouts)")
            raise typer.Exit(EXIT_BUSY)
        if r.status_code == 400:
            err.print(f"[red]cannot start:[/] {_detail(r)}")
            raise typer.Exit(EXIT_USAGE)
        if r.status_code != 202:
            err.print(f"[red]the hub refused the rollout ({r.status_code}):[/] {_detail(r)}")
            raise typer.Exit(EXIT_HUB)
        ro = r.json()
        try:
            ro = _follow(c, ro)
        except KeyboardInterrupt:
            err.print(
                f"\nrollout {ro['id']} goes on in the hub: "
                f"follow it with `sipas-hub terminals rollouts {ro['id']}`, "
                f"stop it with `sipas-hub terminals rollouts cancel {ro['id']}`"
            )
            raise typer.Exit(130) from None
    _show(ro)
    if ro["state"] == "done":
        err.print(f"[green]done:[/] {_summary(ro)}")
        raise typer.Exit(EXIT_OK)
    if ro["state"] == "cancelled":
        err.print(f"[yellow]rollout {ro['id']} {ro['reason']}:[/] {_summary(ro)}")
        err.print(
            "Terminals never sent the update keep their version. Run the same command again to "
            "go on: terminals already on the version are skipped."
        )
        raise typer.Exit(EXIT_STOPPED)
    err.print(f"[red]rollout {ro['id']} {ro['state']}:[/] {ro['reason']}")
    err.print(
        "Terminals not yet updated keep their version. Fix the cause, then run the same command "
        "again: terminals already on the version are skipped."
    )
    raise typer.Exit(EXIT_STOPPED)


def _current(ro: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    steps = ro.get("terminals") or []
    for i, st in enumerate(steps, 1):
        if st["state"] not in _FINAL:
            return i, st
    return len(steps), None


def _follow(c: httpx.Client, ro: dict[str, Any]) -> dict[str, Any]:
    n = ro["total"]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    ) as progress:
        task = progress.add_task(f"rollout {ro['id']} of {ro['version']}", total=n)
        while True:
            done = sum(1 for st in ro.get("terminals", []) if st["state"] in _FINAL)
            i, st = _current(ro)
            what = f"terminal {i} of {n}: {st['terminal']} {st['state']}" if st else ro["state"]
            progress.update(task, completed=done, description=what)
            if ro["state"] not in _GOING_ON:
                return ro
            time.sleep(0.5)
            r = _call(c, "GET", f"/rollouts/{ro['id']}")
            if r.status_code != 200:
                err.print(f"[red]lost the rollout ({r.status_code}):[/] {_detail(r)}")
                raise typer.Exit(EXIT_HUB)
            ro = r.json()


def _local(iso: str | None) -> str:
    if not iso:
        return ""
    return datetime.fromisoformat(iso).astimezone(OFFICE_TZ).strftime("%d/%m/%Y %H:%M:%S")


def _summary(ro: dict[str, Any]) -> str:
    counts = ro.get("counts") or {}
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no terminals"


def _cancel_note(ro: dict[str, Any]) -> str:
    c = ro.get("cancel")
    return f"cancel asked by {c['by']} at {_local(c['at'])}" if c else ""


def _show(ro: dict[str, Any]) -> None:
    t = Table(
        title=f"rollout {ro['id']}: {ro['version']} to {ro['target']} ({ro['state']})",
        caption=_cancel_note(ro) or None,
    )
    for col_name in ("#", "terminal", "state", "from", "reason"):
        t.add_column(col_name)
    for st in ro.get("terminals", []):
        t.add_row(
            str(st["position"] + 1),
            st["terminal"],
            st["state"],
            st["from_fw"] or "-",
            st["reason"] or "",
        )
    out.print(t)


class _RolloutsGroup(TyperGroup):
    """``rollouts ID`` is short for ``rollouts show ID`` (as before ``cancel`` existed)."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0].isdigit():
            args = ["show", *args]
        return super().resolve_command(ctx, args)


rollouts_app = typer.Typer(cls=_RolloutsGroup, invoke_without_command=True)


@rollouts_app.callback()
def rollouts(
    ctx: typer.Context,
    limit: int = typer.Option(20, min=1, max=200, help="how many recent rollouts"),
) -> None:
    """Recent over-the-air rollouts (newest first). `rollouts ID` shows one terminal by terminal;
    `rollouts cancel ID` cancels a running one."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings()
    with _client(settings) as c:
        r = _call(c, "GET", "/rollouts", params={"limit": limit})
        if r.status_code != 200:
            err.print(f"[red]the hub refused ({r.status_code}):[/] {_detail(r)}")
            raise typer.Exit(EXIT_HUB)
    t = Table()
    for col_name in (
        "id",
        "started (ICT)",
        "by",
        "version",
        "target",
        "state",
        "terminals",
        "reason",
    ):
        t.add_column(col_name)
    for ro in r.json():
        t.add_row(
            str(ro["id"]),
            _local(ro["created_at"]),
            ro["actor"],
            ro["version"],
            ro["target"],
            ro["state"],
            _summary(ro),
            ro["reason"] or _cancel_note(ro),
        )
    out.print(t)


@rollouts_app.command("show")
def show(rollout_id: int = typer.Argument(..., help="the rollout's id")) -> None:
    """One rollout, terminal by terminal (`rollouts ID` does the same)."""
    settings = _settings()
    with _client(settings) as c:
        r = _call(c, "GET", f"/rollouts/{rollout_id}")
    if r.status_code != 200:
        err.print(f"[red]{_detail(r)}[/]")
        raise typer.Exit(EXIT_HUB if r.status_code != 404 else EXIT_USAGE)
    _show(r.json())


@rollouts_app.command(
    "cancel",
    epilog=CANCEL_EXIT_CODES,
    short_help="Cancel a running rollout; the terminal being updated finishes first.",
)
def cancel(
    rollout_id: int = typer.Argument(..., help="the rollout's id (sipas-hub terminals rollouts)"),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="wait for the terminal being updated to finish"
    ),
) -> None:
    """Cancel a running rollout. Terminals not yet started are never sent the update. The
    terminal being updated now is never interrupted mid-flash: it finishes (or rolls back) on its
    own, then the rollout ends cancelled."""
    settings = _settings()
    with _client(settings) as c:
        r = _call(c, "POST", f"/rollouts/{rollout_id}/cancel")
        if r.status_code == 404:
            err.print(f"[red]{_detail(r)}[/]")
            raise typer.Exit(EXIT_USAGE)
        if r.status_code == 409:
            err.print(f"[red]nothing to cancel:[/] {_detail(r)}")
            raise typer.Exit(EXIT_ENDED)
        if r.status_code not in (200, 202):
            err.print(f"[red]the hub refused the cancel ({r.status_code}):[/] {_detail(r)}")
            raise typer.Exit(EXIT_HUB)
        ro = r.json()
        busy = next((st for st in ro.get("terminals", []) if st["state"] in _UPDATING), None)
        if ro["state"] == "cancelling":
            who = f"terminal {busy['terminal']}" if busy else "the terminal being updated"
            err.print(
                f"rollout {rollout_id}: cancel requested. {who} is finishing its update on its "
                "own (a terminal is never interrupted mid-flash); no other terminal will be sent "
                "the update."
            )
            if not wait:
                err.print(f"follow it with `sipas-hub terminals rollouts {rollout_id}`")
                return
            try:
                ro = _follow(c, ro)
            except KeyboardInterrupt:
                err.print(
                    f"\nthe cancel stands: rollout {rollout_id} ends when {who} has finished; "
                    f"follow it with `sipas-hub terminals rollouts {rollout_id}`"
                )
                raise typer.Exit(130) from None
    _show(ro)
    err.print(f"[yellow]rollout {rollout_id} {ro['reason'] or ro['state']}:[/] {_summary(ro)}")
    err.print(
        "Terminals never sent the update keep their version; `sipas-hub terminals update` goes "
        "on later (terminals already on the version are skipped)."
    )


def register(terminals_app: typer.Typer) -> None:
    terminals_app.command("update", epilog=EXIT_CODES)(update)
    terminals_app.add_typer(rollouts_app, name="rollouts")
